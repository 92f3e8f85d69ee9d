package org.edgederm.demo.core

import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * Photo -> input tensor, exactly as edge_derm.data.images.resize + the runtime do on the host.
 *
 * Pixels are ARGB ints (Android's Bitmap.getPixels layout: 0xAARRGGBB, not premultiplied);
 * alpha is ignored. The same pixels give the same tensor bytes on the phone and on the host, so
 * the instrumented test can compare predictions with `edge-derm predict`.
 */
object Preprocess {

    /** Resize [src] ([w] x [h]) to the model's input size with the model's resize mode. */
    fun resize(src: IntArray, w: Int, h: Int, spec: InputSpec): IntArray = when (spec.resize) {
        ResizeMode.NEAREST -> resizeNearest(src, w, h, spec.width, spec.height)
        ResizeMode.PAD -> resizePad(src, w, h, spec.width, spec.height)
    }

    /** Resize and encode: the bytes to copy into the input tensor (native byte order). */
    fun prepare(src: IntArray, w: Int, h: Int, spec: InputSpec): ByteBuffer =
        toTensor(resize(src, w, h, spec), spec)

    /**
     * Nearest-neighbour stretch. Source index = floor((dst + 0.5) * src / dst), computed in
     * doubles in the same order as numpy in images.resize, so both pick the same pixels.
     */
    fun resizeNearest(src: IntArray, w: Int, h: Int, outW: Int, outH: Int): IntArray {
        checkSize(src, w, h)
        val xs = IntArray(outW) { x -> Math.min(((x + 0.5) * w / outW).toInt(), w - 1) }
        val out = IntArray(outW * outH)
        for (y in 0 until outH) {
            val sy = Math.min(((y + 0.5) * h / outH).toInt(), h - 1)
            val row = sy * w
            for (x in 0 until outW) out[y * outW + x] = src[row + xs[x]]
        }
        return out
    }

    /**
     * Aspect-preserving bilinear resize centred on black, as images.resize(mode="pad"):
     * the longer side becomes the input size (Python's round-half-even for the shorter one),
     * resampled with Pillow's BILINEAR filter (see [PillowBilinear]).
     */
    fun resizePad(src: IntArray, w: Int, h: Int, outW: Int, outH: Int): IntArray {
        checkSize(src, w, h)
        val scale = Math.min(outH.toDouble() / h, outW.toDouble() / w)
        val nh = Math.min(outH, Math.max(1, Math.rint(h * scale).toInt()))
        val nw = Math.min(outW, Math.max(1, Math.rint(w * scale).toInt()))
        val small = PillowBilinear.resize(src, w, h, nw, nh)
        val out = IntArray(outW * outH) { BLACK }
        val top = (outH - nh) / 2
        val left = (outW - nw) / 2
        for (y in 0 until nh) System.arraycopy(small, y * nw, out, (top + y) * outW + left, nw)
        return out
    }

    /**
     * Encode resized pixels as the input tensor: value = range_min + p * (range_max - range_min) / 255,
     * then (value - mean[c]) / std[c], then for uint8/int8 q = round_half_even(value / scale) + zero_point,
     * clamped to the type (what numpy's round does on the host).
     */
    fun toTensor(pixels: IntArray, spec: InputSpec): ByteBuffer {
        val n = spec.height * spec.width
        if (pixels.size != n) {
            throw IllegalArgumentException("expected ${spec.width}x${spec.height} pixels, got ${pixels.size}")
        }
        val buf = ByteBuffer.allocateDirect(spec.byteSize).order(ByteOrder.nativeOrder())
        for (p in pixels) {
            for (c in 0 until 3) {
                val value = normalise(channel(p, c), c, spec)
                if (spec.dtype == TensorType.FLOAT32) {
                    buf.putFloat(value.toFloat())
                } else {
                    buf.put(quantise(value, spec).toByte())
                }
            }
        }
        buf.rewind()
        return buf
    }

    /** Channel [c] (0 = R, 1 = G, 2 = B) of an ARGB pixel, 0-255. */
    fun channel(argb: Int, c: Int): Int = (argb shr (16 - 8 * c)) and 0xFF

    fun normalise(pixel: Int, c: Int, spec: InputSpec): Double {
        val v = spec.rangeMin + pixel * (spec.rangeMax - spec.rangeMin) / 255.0
        return (v - spec.mean[c]) / spec.std[c]
    }

    fun quantise(value: Double, spec: InputSpec): Int {
        val q = Math.rint(value / spec.scale) + spec.zeroPoint
        return Math.max(spec.dtype.min.toDouble(), Math.min(spec.dtype.max.toDouble(), q)).toInt()
    }

    /** An ARGB pixel. */
    fun argb(r: Int, g: Int, b: Int): Int = (0xFF shl 24) or (r shl 16) or (g shl 8) or b

    private const val BLACK = 0xFF shl 24

    private fun checkSize(src: IntArray, w: Int, h: Int) {
        if (w < 1 || h < 1 || src.size != w * h) {
            throw IllegalArgumentException("image of ${w}x$h needs ${w * h} pixels, got ${src.size}")
        }
    }
}

/**
 * Pillow's Image.resize(..., BILINEAR) for 8-bit RGB, re-implemented step for step
 * (libImaging/Resample.c: precompute_coeffs, 22-bit fixed-point coefficients, horizontal pass
 * then vertical pass, each rounded to 8 bits), so "pad" models see the host's exact pixels.
 */
object PillowBilinear {
    private const val PRECISION_BITS = 32 - 8 - 2

    private class Coeffs(val ksize: Int, val bounds: IntArray, val k: IntArray)

    fun resize(src: IntArray, w: Int, h: Int, outW: Int, outH: Int): IntArray {
        if (outW == w && outH == h) return src.copyOf()
        var img = src
        var curW = w
        if (outW != w) {
            img = horizontal(img, w, h, outW, coeffs(w, outW))
            curW = outW
        }
        if (outH != h) img = vertical(img, curW, outH, coeffs(h, outH))
        return img
    }

    private fun filter(x: Double): Double {
        val a = if (x < 0.0) -x else x
        return if (a < 1.0) 1.0 - a else 0.0
    }

    private fun coeffs(inSize: Int, outSize: Int): Coeffs {
        val scale = inSize.toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = 1.0 * filterScale
        val ksize = Math.ceil(support).toInt() * 2 + 1
        val bounds = IntArray(outSize * 2)
        val k = IntArray(outSize * ksize)
        val pre = DoubleArray(ksize)
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            var ww = 0.0
            val ss = 1.0 / filterScale
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            for (x in 0 until xmax) {
                val wgt = filter((x + xmin - center + 0.5) * ss)
                pre[x] = wgt
                ww += wgt
            }
            for (x in 0 until ksize) {
                var v = if (x < xmax) pre[x] else 0.0
                if (x < xmax && ww != 0.0) v /= ww
                k[xx * ksize + x] = if (v < 0) (-0.5 + v * (1 shl PRECISION_BITS)).toInt()
                else (0.5 + v * (1 shl PRECISION_BITS)).toInt()
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        return Coeffs(ksize, bounds, k)
    }

    private fun clip8(v: Int): Int {
        val s = v shr PRECISION_BITS
        return if (s < 0) 0 else if (s > 255) 255 else s
    }

    private fun horizontal(src: IntArray, w: Int, h: Int, outW: Int, c: Coeffs): IntArray {
        val out = IntArray(outW * h)
        val half = 1 shl (PRECISION_BITS - 1)
        for (y in 0 until h) {
            val row = y * w
            for (xx in 0 until outW) {
                val xmin = c.bounds[xx * 2]
                val xmax = c.bounds[xx * 2 + 1]
                val base = xx * c.ksize
                var r = half
                var g = half
                var b = half
                for (x in 0 until xmax) {
                    val p = src[row + x + xmin]
                    val kx = c.k[base + x]
                    r += ((p shr 16) and 0xFF) * kx
                    g += ((p shr 8) and 0xFF) * kx
                    b += (p and 0xFF) * kx
                }
                out[y * outW + xx] = Preprocess.argb(clip8(r), clip8(g), clip8(b))
            }
        }
        return out
    }

    private fun vertical(src: IntArray, w: Int, outH: Int, c: Coeffs): IntArray {
        val out = IntArray(w * outH)
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until outH) {
            val ymin = c.bounds[yy * 2]
            val ymax = c.bounds[yy * 2 + 1]
            val base = yy * c.ksize
            for (x in 0 until w) {
                var r = half
                var g = half
                var b = half
                for (y in 0 until ymax) {
                    val p = src[(y + ymin) * w + x]
                    val ky = c.k[base + y]
                    r += ((p shr 16) and 0xFF) * ky
                    g += ((p shr 8) and 0xFF) * ky
                    b += (p and 0xFF) * ky
                }
                out[yy * w + x] = Preprocess.argb(clip8(r), clip8(g), clip8(b))
            }
        }
        return out
    }
}

/** Output tensor -> probabilities in label order. */
object Postprocess {
    /** Dequantise the raw output bytes (native order) and apply softmax when the model has none. */
    fun probabilities(raw: ByteBuffer, spec: OutputSpec, n: Int): DoubleArray {
        val buf = raw.duplicate().order(ByteOrder.nativeOrder())
        buf.rewind()
        if (buf.remaining() < n * spec.dtype.bytes) {
            throw IllegalArgumentException("output has ${buf.remaining()} bytes, expected ${n * spec.dtype.bytes}")
        }
        val out = DoubleArray(n) {
            when (spec.dtype) {
                TensorType.FLOAT32 -> buf.getFloat().toDouble()
                TensorType.UINT8 -> ((buf.get().toInt() and 0xFF) - spec.zeroPoint) * spec.scale
                TensorType.INT8 -> (buf.get().toInt() - spec.zeroPoint) * spec.scale
            }
        }
        return if (spec.isSoftmax) out else softmax(out)
    }

    fun softmax(logits: DoubleArray): DoubleArray {
        var m = Double.NEGATIVE_INFINITY
        for (v in logits) if (v > m) m = v
        val e = DoubleArray(logits.size) { Math.exp(logits[it] - m) }
        var sum = 0.0
        for (v in e) sum += v
        return DoubleArray(e.size) { e[it] / sum }
    }
}
