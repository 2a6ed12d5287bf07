"""ctlwire.tcs"""
