package org.edgederm.demo.core

import java.io.File

/**
 * Command-line hook for tests/test_android_core.py, so the host can check the Kotlin core against
 * the Python side byte for byte. Commands, any number in a row:
 *
 * - `nearest|pad OUT_W OUT_H IN.ppm OUT.ppm`: resize a binary PPM (P6) with [Preprocess];
 * - `tensor MODEL_JSON IN.ppm OUT.bin`: the input tensor bytes for an image, per model.json;
 * - `meta MODEL_JSON`: print what [ModelMetadata] read, one `key=value` per line;
 * - `expected EXPECTED_JSON`: print what [ExpectedResults] read.
 */
object GoldenTool {
    @JvmStatic
    fun main(args: Array<String>) {
        var i = 0
        while (i < args.size) {
            when (args[i]) {
                "nearest", "pad" -> {
                    val (w, h, pixels) = readPpm(File(args[i + 3]))
                    val ow = args[i + 1].toInt()
                    val oh = args[i + 2].toInt()
                    val out = if (args[i] == "nearest") Preprocess.resizeNearest(pixels, w, h, ow, oh)
                    else Preprocess.resizePad(pixels, w, h, ow, oh)
                    writePpm(File(args[i + 4]), ow, oh, out)
                    i += 5
                }
                "tensor" -> {
                    val meta = ModelMetadata.parse(File(args[i + 1]).readText())
                    val (w, h, pixels) = readPpm(File(args[i + 2]))
                    val buf = Preprocess.prepare(pixels, w, h, meta.input)
                    val bytes = ByteArray(buf.remaining())
                    buf.get(bytes)
                    File(args[i + 3]).writeBytes(bytes)
                    i += 4
                }
                "meta" -> {
                    val m = ModelMetadata.parse(File(args[i + 1]).readText())
                    println("labels=" + m.labels.joinToString(","))
                    println("size=${m.input.height}x${m.input.width}")
                    println("resize=${m.input.resize.id}")
                    println("input=${m.input.dtype.id},${m.input.scale},${m.input.zeroPoint}")
                    println("output=${m.output.dtype.id},${m.output.scale},${m.output.zeroPoint},${m.output.isSoftmax}")
                    println("triage=" + m.labels.joinToString(",") { it + ":" + m.triageOf(it).id })
                    i += 2
                }
                "expected" -> {
                    val e = ExpectedResults.parse(File(args[i + 1]).readText())
                    println("samples=${e.samples.size}")
                    println("top1=" + e.samples.joinToString(",") { it.top1 })
                    println("atol=${e.probAtol}")
                    i += 2
                }
                else -> {
                    System.err.println("GoldenTool: unknown command ${args[i]}")
                    System.exit(2)
                }
            }
        }
    }

    private fun readPpm(f: File): Triple<Int, Int, IntArray> {
        val bytes = f.readBytes()
        var i = 0
        val tokens = ArrayList<String>()
        while (tokens.size < 4) {
            while (bytes[i] == ' '.toByte() || bytes[i] == '\n'.toByte()) i++
            val start = i
            while (bytes[i] != ' '.toByte() && bytes[i] != '\n'.toByte()) i++
            tokens.add(String(bytes, start, i - start, Charsets.US_ASCII))
        }
        i++ // the single whitespace before the raster
        if (tokens[0] != "P6" || tokens[3] != "255") throw IllegalArgumentException("${f.name}: not an 8-bit P6 PPM")
        val w = tokens[1].toInt()
        val h = tokens[2].toInt()
        val px = IntArray(w * h) { n ->
            val o = i + 3 * n
            Preprocess.argb(bytes[o].toInt() and 0xFF, bytes[o + 1].toInt() and 0xFF, bytes[o + 2].toInt() and 0xFF)
        }
        return Triple(w, h, px)
    }

    private fun writePpm(f: File, w: Int, h: Int, px: IntArray) {
        val header = "P6\n$w $h\n255\n".toByteArray(Charsets.US_ASCII)
        val out = ByteArray(header.size + 3 * px.size)
        System.arraycopy(header, 0, out, 0, header.size)
        for (n in px.indices) {
            for (c in 0 until 3) out[header.size + 3 * n + c] = Preprocess.channel(px[n], c).toByte()
        }
        f.writeBytes(out)
    }
}
