"""Batch prediction on Apache Beam (`keras-resnest predict-batch`): the model handler of
`RunInference` and the pipeline. Needs `pip install "keras-resnest[beam]"`; nothing here is
imported by the rest of the package.
"""
