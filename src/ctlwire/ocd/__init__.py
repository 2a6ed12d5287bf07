"""ctlwire.ocd"""
