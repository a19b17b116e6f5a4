"""The baseline: an entry script in the style of Azure ML's "deploy a deep learning model for
GPU inference" article, brought to TensorFlow 2.

Like the article's: one request, one model call (batch of one), the whole output returned
with ujson, GET refused with 405. Its session.run on a TF1 graph becomes a call of the
SavedModel's serving signature; the image is decoded and resized with plain Pillow, as the
article's readers do for a model without decoding in its graph. Benchmarks only.
"""

import io
import os

import numpy as np
import tensorflow as tf
import ujson
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse
from PIL import Image

# Keras ResNet50's "caffe" preprocessing: BGR, ImageNet means subtracted
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def init():
    global signature, input_name, size

    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "resnet50")
    model = tf.saved_model.load(model_path)
    signature = model.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    if len(inputs) > 1:
        raise ValueError("This score.py only supports one input")
    input_name = next(iter(inputs))
    size = tuple(inputs[input_name].shape[1:3])


@rawhttp
def run(request):
    if request.method == "POST":
        reqBody = request.get_data(False)
        resp = score(reqBody)
        return AMLResponse(resp, 200)
    if request.method == "GET":
        respBody = str.encode("GET is not supported")
        return AMLResponse(respBody, 405)
    return AMLResponse("bad request", 500)


def score(data):
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((size[1], size[0]))
    pixels = np.asarray(image, dtype=np.float32)[:, :, ::-1] - CAFFE_MEAN_BGR
    result = signature(**{input_name: tf.constant(pixels[None])})
    return ujson.dumps(next(iter(result.values())).numpy()[0].tolist())
