"""Clients of an exported model running in TensorFlow Serving (REST on 8501, gRPC on 8500).

Both send encoded image files to the `serving_bytes` signature, so the server does the decoding
and the official evaluation transform; the reply holds the top-5 `classes`, `scores`, `labels`.

Example (with `docker run ... tensorflow/serving` from docs/export.md running):
    >>> body = rest_request_body([b"<jpeg bytes>"])
    >>> sorted(body)
    ['instances', 'signature_name']
    >>> # grpc_predict("localhost:8500", "resnest50", [open("cat.jpg", "rb").read()])
"""
import base64
import json
import urllib.request

BYTES_SIGNATURE = "serving_bytes"
BYTES_INPUT = "image_bytes"
OUTPUTS = ("classes", "scores", "labels")


def rest_request_body(images, signature_name=BYTES_SIGNATURE):
    """JSON body of a REST predict call: row format, each image as `{"b64": ...}`."""
    return {
        "signature_name": signature_name,
        "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images],
    }


def rest_predict(base_url, model_name, images, timeout=30.0):
    """POST the images to `<base_url>/v1/models/<model_name>:predict`; returns the predictions."""
    request = urllib.request.Request(
        f"{base_url.rstrip('/')}/v1/models/{model_name}:predict",
        data=json.dumps(rest_request_body(images)).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["predictions"]


def predict_request(model_name, images, signature_name=BYTES_SIGNATURE):
    """A gRPC `PredictRequest` carrying the encoded images as a string tensor."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    request.inputs[BYTES_INPUT].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request


def decode_predict_response(response):
    """numpy arrays of the `classes`, `scores` and `labels` outputs of a `PredictResponse`."""
    import tensorflow as tf

    return {name: tf.make_ndarray(response.outputs[name]) for name in OUTPUTS}


def grpc_predict(target, model_name, images, timeout=30.0):
    """Calls `PredictionService/Predict` at `target` ("host:port").

    Returns `decode_predict_response` of the reply.
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(model_name, images), timeout)
    return decode_predict_response(response)


def format_predictions(paths, predictions):
    """One block per image: its path, then `label  score` for the top classes."""
    lines = []
    for index, path in enumerate(paths):
        lines.append(str(path))
        for label, score in zip(predictions["labels"][index], predictions["scores"][index]):
            label = label.decode("utf-8") if isinstance(label, bytes) else label
            lines.append(f"  {float(score):.4f}  {label}")
    return "\n".join(lines)
