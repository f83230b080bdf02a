"""galexplore.data"""
