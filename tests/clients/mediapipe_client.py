"""Run MediaPipe Tasks' ImageClassifier on .tflite files; print one JSON document (stdout).

Runs under the standard-clients interpreter (``.venv-clients``, made by ``make clients``), not the
project's: MediaPipe does not install beside tensorflow-model-optimization. Usage::

    python mediapipe_client.py IMAGES.npy MODEL.tflite [MODEL.tflite ...]

IMAGES.npy holds uint8 RGB images [N, S, S, 3] already at the model's input size, so MediaPipe's
own resizer does not enter the comparison. For each model the output has the standard metadata as
MediaPipe's generated schema reads it back, and every image's categories, best first.
"""

import json
import sys
import zipfile

import mediapipe as mp
import numpy as np
from mediapipe.tasks import python as mp_tasks
from mediapipe.tasks.metadata import metadata_schema_py_generated as schema
from mediapipe.tasks.python import vision


def read_standard_metadata(path):
    """The TFLITE_METADATA buffer decoded with MediaPipe's generated schemas, as plain data."""
    from mediapipe.tasks.metadata import schema_py_generated as tflite

    buf = bytearray(open(path, "rb").read())
    model = tflite.Model.GetRootAs(buf, 0)
    names = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    data = model.Buffers(names["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    return {"identifier_ok": bool(schema.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)),
            "model": plain(schema.ModelMetadataT.InitFromPackedBuf(bytearray(data), 0))}


def plain(obj):
    """A generated ``...T`` object as JSON-able data (bytes decoded, numpy arrays listed)."""
    if isinstance(obj, bytes):
        return obj.decode()
    if isinstance(obj, (list, tuple)):
        return [plain(x) for x in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__dict__"):
        return {"_type": type(obj).__name__, **{k: plain(v) for k, v in vars(obj).items() if v is not None}}
    return obj


def main(argv):
    images = np.load(argv[1])
    out = {}
    for path in argv[2:]:
        try:
            meta = read_standard_metadata(path)
        except Exception as exc:  # reported, and the test fails on it
            meta = {"error": f"{type(exc).__name__}: {exc}"}
        with zipfile.ZipFile(path) as zf:
            labels = zf.read("labels.txt").decode().split("\n")
        options = vision.ImageClassifierOptions(base_options=mp_tasks.BaseOptions(model_asset_path=path),
                                                max_results=len(labels))
        results = []
        with vision.ImageClassifier.create_from_options(options) as classifier:
            for img in images:
                res = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
                results.append([{"index": c.index, "name": c.category_name, "display_name": c.display_name,
                                 "score": c.score} for c in res.classifications[0].categories])
        out[path] = {"metadata": meta, "results": results}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
