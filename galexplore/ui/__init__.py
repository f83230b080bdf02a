"""galexplore.ui"""
