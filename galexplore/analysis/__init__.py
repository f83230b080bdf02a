"""galexplore.analysis"""
