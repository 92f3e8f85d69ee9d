"""``convert --quantize int8 --min-agreement A``: the cheapest int8 recipe that keeps A top-1 agreement.

Recipes are tried from the cheapest upward and the first that reaches the bar on the fidelity
images is kept (every try is recorded). "Cheap" is what the shipped file costs on the device first
(size, latency, integer-only ops), then what the conversion costs:

1. full int8, per-tensor weights, the default calibration sample (smallest file);
2. full int8, per-channel weights (TFLite's default), the default calibration sample;
3. the same with a 4x larger class-stratified calibration sample, then every training image
   (same file cost, only the conversion is slower); then, when ``ai-edge-quantizer`` is installed
   (the ``quantizer`` extra), Google's second backend on the converted float model with its
   static int8 recipe (``static_wi8_ai8``, default calibration sample);
4. selective int8: the best calibration, with float layers added one at a time, each chosen
   greedily as the candidate whose float copy raises top-1 agreement most (candidates: the
   quantisation debugger's worst layers; the choice is made on the output, not the layer error);
   float input/output, some float ops, so slower than full int8;
5. 16x8: int16 activations, int8 weights, every op (TFLite's
   ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``); integer-only but on CPU it
   runs TFLite's reference kernels (not XNNPACK), so it is last, with ai-edge-quantizer's a16w8
   (``static_wi8_ai16``) after it when installed. Exception: when the best full-integer recipe is
   more than ``COLLAPSE_GAP`` below the bar (a collapse), 16x8 comes before step 4: a collapse spread
   over the whole network is out of reach of a few float layers, and the greedy steps are the
   search's most expensive part.

A calibration sample is calibrated once (``_experimental_calibrate_only``) and quantised many
times (``mlir_quantize``), exactly as TensorFlow's own quantisation debugger does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io as _io
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from edge_derm.errors import ConversionError
from edge_derm.progress import task

from .presets import Preset
from .tflite import make_converter

_log = logging.getLogger(__name__)

#: Debugger layers tried as float candidates at each greedy step.
SEARCH_CANDIDATES = 6
#: At most this many float layers in a selective recipe.
MAX_FLOAT_LAYERS = 3
#: When the best full-integer recipe is this far below the bar, the error is a collapse, and a collapse spread
#: over the network (EfficientNet-B3: every block alone costs 6-56 points, no group kept in float helps;
#: benchmarks/scripts/measure_b3_recovery.py --diagnose) is out of reach of a few float layers, each greedy step of which
#: costs SEARCH_CANDIDATES conversions: 16x8 (int16 activations) is tried before the greedy search.
COLLAPSE_GAP = 0.10


@dataclass
class Recipe:
    """One way to make the int8 file (what ``model.json`` records as ``recipe``)."""

    name: str
    per_channel: bool = True
    calibration: str = "default"
    calibration_n: int = 0
    float_layers: list[str] = field(default_factory=list)
    activations: str = "int8"
    io: str = "uint8"
    backend: str = "tflite"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "per_channel": self.per_channel, "calibration": self.calibration,
                "calibration_n": self.calibration_n, "float_layers": list(self.float_layers),
                "activations": self.activations, "io": self.io, "backend": self.backend}


@dataclass
class Candidate:
    """A recipe, its bytes and how it scored."""

    recipe: Recipe
    data: bytes
    score: dict[str, Any]

    @property
    def agreement(self) -> float:
        return float(self.score["top1_agreement"])


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


class Calibrated:
    """A model calibrated once on one sample; quantised with any per-channel / denylist setting."""

    def __init__(self, model, preset: Preset, images: np.ndarray):
        import tensorflow as tf

        converter = make_converter(model, preset, "float32", images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter._experimental_calibrate_only = True  # noqa: SLF001 - what QuantizationDebugger does
        try:
            self.calibrated = converter.convert()
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"int8 calibration failed: {_one_line(exc)}") from exc
        self.n = len(images)

    def quantize(self, *, per_channel: bool = True, io: str = "uint8", float_nodes: Sequence[str] = ()) -> bytes:
        import tensorflow as tf
        from tensorflow.lite.python import convert as tfl_convert

        dtypes = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
        nodes = [n for n in float_nodes if not n.startswith("op:")]
        ops = [n[3:] for n in float_nodes if n.startswith("op:")]
        try:
            return bytes(tfl_convert.mlir_quantize(
                self.calibrated, disable_per_channel=not per_channel,
                input_data_type=dtypes[io], output_data_type=dtypes[io],
                denylisted_nodes=nodes or None, denylisted_ops=ops or None))
        except Exception as exc:  # noqa: BLE001
            raise ConversionError(f"int8 quantisation failed: {_one_line(exc)}") from exc


def convert_16x8(model, preset: Preset, images: np.ndarray) -> bytes:
    """int16 activations, int8 weights (float32 input/output)."""
    import tensorflow as tf

    converter = make_converter(model, preset, "float32", images)
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    try:
        return bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001
        raise ConversionError(f"16x8 conversion failed: {_one_line(exc)}") from exc


def aeq_available() -> bool:
    """Whether Google's ai-edge-quantizer (the ``quantizer`` extra) is installed."""
    return importlib.util.find_spec("ai_edge_quantizer") is not None


def convert_aeq(float_model: bytes, images: np.ndarray, recipe_name: str) -> bytes:
    """Quantise a converted float .tflite with ai-edge-quantizer's ``recipe_name`` (e.g. ``static_wi8_ai8``).

    Its progress bars and prints are captured (libraries log); failures are one-line ConversionErrors.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as exc:
        raise ConversionError(f"ai-edge-quantizer is not installed ({exc}); pip install 'edge-derm[quantizer]'") from None
    sink = _io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            signatures = Interpreter(model_content=float_model).get_signature_list()
            key = next(iter(signatures))
            name = signatures[key]["inputs"][0]
            qt = quantizer.Quantizer(float_model)
            qt.load_quantization_recipe(getattr(recipe, recipe_name)())
            calibrated = qt.calibrate({key: [{name: np.asarray(im, np.float32)[None]} for im in images]})
            data = bytes(qt.quantize(calibrated).quantized_model)
    except Exception as exc:  # noqa: BLE001 - a third-party backend; report one line
        raise ConversionError(f"ai-edge-quantizer recipe {recipe_name} failed: {_one_line(exc)}") from exc
    _log.debug("ai-edge-quantizer output: %s", sink.getvalue()[-2000:])
    return data


@dataclass
class SearchResult:
    """The recipe picked (None when none reached the bar), the best tried, and every try."""

    chosen: Candidate | None
    best: Candidate | None
    tried: list[dict[str, Any]]

    def summary(self, bar: float) -> dict[str, Any]:
        pick = self.chosen or self.best
        return {"min_agreement": bar, "met": self.chosen is not None,
                "recipe": pick.recipe.as_dict() if pick else None, "tried": self.tried}


def search_int8(model, preset: Preset, calibration: Callable[[str], tuple[np.ndarray, int] | None],
                score: Callable[[bytes], dict[str, Any]], bar: float, io: str,
                candidates: Callable[[np.ndarray], list[str]], *, max_float_layers: int = MAX_FLOAT_LAYERS,
                n_candidates: int = SEARCH_CANDIDATES, float_model: Callable[[], bytes] | None = None,
                use_aeq: bool | None = None) -> SearchResult:
    """Try int8 recipes from the cheapest upward; stop at the first whose agreement reaches ``bar``.

    Full-integer recipes first, then greedy float layers and 16x8 (16x8 first after a collapse).

    Args:
        model: the Keras model.
        preset: the int8 preset.
        calibration: ``name -> (images, n)`` for ``default``, ``4x`` and ``all`` (None when a sample
            would repeat a smaller one: the dataset has no more images).
        score: bytes -> :func:`edge_derm.converters.verify.fidelity` with ``passed``.
        bar: the top-1 agreement to reach.
        io: input/output dtype of the full-integer recipes.
        candidates: calibration images -> float-layer candidates (tensor names), most suspect first.
        max_float_layers: the greedy search stops after this many float layers.
        n_candidates: candidates tried at each greedy step.
        float_model: makes the converted float .tflite (ai-edge-quantizer's input).
        use_aeq: try ai-edge-quantizer's recipes (default: when it is installed and ``float_model`` given).
    """
    if use_aeq is None:
        use_aeq = float_model is not None and aeq_available()
    s = _Search(model, preset, calibration, score, float_model)
    found, best_cal, best_cal_agreement = _full_integer_recipes(s, io, use_aeq)
    if found is not None:
        return s.result(found)
    cal = s.calibrated[best_cal]
    images = s.samples[best_cal][0]

    def try_16x8() -> Candidate | None:
        return s.attempt(Recipe(f"16x8 (int16 activations, int8 weights), {cal.n} calibration images",
                                calibration=best_cal, calibration_n=cal.n, activations="int16", io="float32"),
                         lambda: convert_16x8(model, preset, images))

    # a collapse: even the best full-integer recipe that converted is far below the bar (none converted: no verdict)
    early_16x8 = bool(s.full_integer) and bar - max(s.full_integer) > COLLAPSE_GAP
    if early_16x8:
        _log.info("int8 search: best full-integer agreement %.4f is more than %.2f below the bar: 16x8 first",
                  max(s.full_integer), COLLAPSE_GAP)
        cand = try_16x8()
        if _done(cand):
            return s.result(cand)
    found = _greedy_float_layers(s, candidates, images, best_cal, best_cal_agreement, max_float_layers, n_candidates)
    if found is not None:
        return s.result(found)
    if not early_16x8:
        cand = try_16x8()
        if _done(cand):
            return s.result(cand)
    if use_aeq:
        n0 = s.calibrated["default"].n
        cand = s.attempt(Recipe(f"ai-edge-quantizer a16w8, {n0} calibration images", calibration="default",
                                calibration_n=n0, activations="int16", io="int16", backend="ai-edge-quantizer"),
                         lambda: convert_aeq(s.float_tflite(), s.samples["default"][0], "static_wi8_ai16"))
        if _done(cand):
            return s.result(cand)
    return s.result(None)


def _done(cand: Candidate | None) -> bool:
    """Whether a recipe was made and meets the bar."""
    return cand is not None and bool(cand.score["passed"])


class _Search:
    """The state of one search: what was tried, the best so far, the calibrations made (each once)."""

    def __init__(self, model, preset: Preset, calibration: Callable[[str], tuple[np.ndarray, int] | None],
                 score: Callable[[bytes], dict[str, Any]], float_model: Callable[[], bytes] | None):
        self.model, self.preset, self.calibration, self.score = model, preset, calibration, score
        self.float_model = float_model
        self.tried: list[dict[str, Any]] = []
        self.best: Candidate | None = None
        self.full_integer: list[float] = []  # agreements of the full-integer recipes (collapse check)
        self.samples: dict[str, tuple[np.ndarray, int]] = {}
        self.calibrated: dict[str, Calibrated] = {}
        self._float_bytes: bytes | None = None

    def result(self, chosen: Candidate | None) -> SearchResult:
        return SearchResult(chosen, self.best, self.tried)

    def float_tflite(self) -> bytes:
        """The converted float model (made once, when a recipe first needs it)."""
        if self._float_bytes is None:
            self._float_bytes = self.float_model()
        return self._float_bytes

    def calibrated_for(self, name: str) -> Calibrated | None:
        """The model calibrated on the ``name`` sample (once); None when there is no such sample."""
        if name not in self.calibrated:
            got = self.calibration(name)
            if got is None:
                return None
            self.samples[name] = got
            with task(f"int8 search: calibrating on {got[1]} images ({name})"):
                self.calibrated[name] = Calibrated(self.model, self.preset, got[0])
        return self.calibrated[name]

    def attempt(self, recipe: Recipe, make: Callable[[], bytes], full: bool = False) -> Candidate | None:
        """Make and score one recipe (None when it cannot be made); ``full``: a full-integer recipe, whose
        agreement the collapse check reads."""
        with task(f"int8 search: {recipe.name}"):
            try:
                data = make()
                sc = self.score(data)
            except ConversionError as exc:
                self.tried.append({"recipe": recipe.as_dict(), "error": str(exc)})
                _log.warning("int8 recipe %s failed: %s", recipe.name, exc)
                return None
        cand = Candidate(recipe, data, sc)
        self.tried.append({"recipe": recipe.as_dict(), "top1_agreement": sc["top1_agreement"], "passed": sc["passed"],
                           "size_bytes": len(data), "watch_flips": {k: v["flipped"] for k, v in sc["watch"].items()}})
        _log.info("int8 recipe %s: agreement %.4f (%s)", recipe.name, cand.agreement,
                  "meets the bar" if sc["passed"] else "below the bar")
        if self.best is None or cand.agreement > self.best.agreement:
            self.best = cand
        if full:
            self.full_integer.append(cand.agreement)
        return cand


def _full_integer_recipes(s: _Search, io: str, use_aeq: bool) -> tuple[Candidate | None, str, float]:
    """Per-tensor, per-channel, per-channel on more calibration images, ai-edge-quantizer's static int8.

    Returns:
        The first recipe that meets the bar (or None), and the calibration sample whose per-channel
        recipe agreed best, with that agreement (where the later recipes start).
    """
    default = s.calibrated_for("default")
    n0 = default.n
    cand = s.attempt(Recipe(f"per-tensor, {n0} calibration images", per_channel=False, calibration="default",
                            calibration_n=n0, io=io), lambda: default.quantize(per_channel=False, io=io), full=True)
    if _done(cand):
        return cand, "default", 0.0
    cand = s.attempt(Recipe(f"per-channel, {n0} calibration images", calibration="default", calibration_n=n0, io=io),
                     lambda: default.quantize(per_channel=True, io=io), full=True)
    if _done(cand):
        return cand, "default", 0.0
    best_cal, best_cal_agreement = "default", cand.agreement if cand is not None else 0.0
    for name in ("4x", "all"):
        cal = s.calibrated_for(name)
        if cal is None:
            continue
        label = f"every training image ({cal.n})" if name == "all" else f"{cal.n} calibration images"
        cand = s.attempt(Recipe(f"per-channel, {label}", calibration=name, calibration_n=cal.n, io=io),
                         lambda c=cal: c.quantize(per_channel=True, io=io), full=True)
        if _done(cand):
            return cand, name, 0.0
        if cand is not None and cand.agreement > best_cal_agreement:
            best_cal, best_cal_agreement = name, cand.agreement
    if use_aeq:  # the second backend, same file cost as full int8 (int8 input/output)
        cand = s.attempt(Recipe(f"ai-edge-quantizer static int8, {n0} calibration images", calibration="default",
                                calibration_n=n0, io="int8", backend="ai-edge-quantizer"),
                         lambda: convert_aeq(s.float_tflite(), s.samples["default"][0], "static_wi8_ai8"), full=True)
        if _done(cand):
            return cand, best_cal, best_cal_agreement
    return None, best_cal, best_cal_agreement


def _greedy_float_layers(s: _Search, candidates: Callable[[np.ndarray], list[str]], images: np.ndarray,
                         best_cal: str, current: float, max_float_layers: int, n_candidates: int) -> Candidate | None:
    """Greedy selective quantisation: each step keeps the candidate layer whose float copy helps the output
    most, until a recipe meets the bar (returned), none helps any more, or ``max_float_layers`` are float."""
    cal = s.calibrated[best_cal]
    try:
        pool = list(candidates(images))[:n_candidates]
    except ConversionError as exc:
        s.tried.append({"recipe": {"name": "selective: float-layer candidates"}, "error": str(exc)})
        pool = []
    layers: list[str] = []
    for _ in range(min(max_float_layers, len(pool))):
        step: Candidate | None = None
        for layer in [c for c in pool if c not in layers]:
            trial = layers + [layer]
            cand = s.attempt(Recipe(f"selective, {len(trial)} float layer(s), {cal.n} calibration images",
                                    calibration=best_cal, calibration_n=cal.n, float_layers=trial, io="float32"),
                             lambda t=trial: cal.quantize(per_channel=True, io="float32", float_nodes=t))
            if _done(cand):
                return cand
            if cand is not None and (step is None or cand.agreement > step.agreement):
                step = cand
        if step is None or step.agreement <= current:
            break  # no candidate helps any more
        layers, current = list(step.recipe.float_layers), step.agreement
    return None
