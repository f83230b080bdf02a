"""galexplore.training"""
