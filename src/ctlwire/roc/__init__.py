"""ctlwire.roc"""
