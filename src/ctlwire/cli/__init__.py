"""ctlwire.cli"""
