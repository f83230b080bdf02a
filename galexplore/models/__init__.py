"""galexplore.models"""
