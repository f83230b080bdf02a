"""galexplore.mock"""
