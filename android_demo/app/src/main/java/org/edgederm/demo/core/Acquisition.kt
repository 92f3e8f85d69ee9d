package org.edgederm.demo.core

/** A square region of an image, in pixels. */
class Region(val left: Int, val top: Int, val size: Int)

/** The framing guide: a centred square the user puts the lesion in; the overlay draws the same square. */
object Framing {
    /** Side of the guide as a fraction of the image's shorter side. */
    const val GUIDE_FRACTION = 0.7

    fun guide(w: Int, h: Int, fraction: Double = GUIDE_FRACTION): Region {
        val side = Math.max(1, (Math.min(w, h) * fraction).toInt())
        return Region((w - side) / 2, (h - side) / 2, side)
    }

    /**
     * The guide square of a [viewW] x [viewH] preview mapped into an [imageW] x [imageH] photo, for a
     * preview that scales the photo to fill the view and centres it (PreviewView FILL_CENTER).
     */
    fun guideInImage(imageW: Int, imageH: Int, viewW: Int, viewH: Int, fraction: Double = GUIDE_FRACTION): Region {
        val scale = Math.max(viewW.toDouble() / imageW, viewH.toDouble() / imageH)
        val side = Math.max(1, Math.min(Math.min(imageW, imageH), (Math.min(viewW, viewH) * fraction / scale).toInt()))
        return Region((imageW - side) / 2, (imageH - side) / 2, side)
    }

    /**
     * The guide square of [guideInImage] for a camera frame of [frameW] x [frameH] that must be rotated
     * by [rotationDegrees] (CameraX's rotationDegrees) to be upright, in the frame's own pixels: crop
     * and rotate in one step. A centred square stays centred under rotation; only its side depends on
     * which way up the frame is. A view not laid out yet (0 x 0) gives the plain [guide] square.
     */
    fun guideInFrame(frameW: Int, frameH: Int, rotationDegrees: Int, viewW: Int, viewH: Int,
                     fraction: Double = GUIDE_FRACTION): Region {
        val quarterTurn = ((rotationDegrees % 360 + 360) % 360) / 90 % 2 == 1
        val uprightW = if (quarterTurn) frameH else frameW
        val uprightH = if (quarterTurn) frameW else frameH
        val side = if (viewW <= 0 || viewH <= 0) guide(uprightW, uprightH, fraction).size
        else guideInImage(uprightW, uprightH, viewW, viewH, fraction).size
        return Region((frameW - side) / 2, (frameH - side) / 2, side)
    }

    /** Copy [r] out of [src] ([w] wide). */
    fun crop(src: IntArray, w: Int, r: Region): IntArray {
        val out = IntArray(r.size * r.size)
        for (y in 0 until r.size) System.arraycopy(src, (r.top + y) * w + r.left, out, y * r.size, r.size)
        return out
    }
}

/** What to tell the user before classifying a photo. */
enum class AcquisitionIssue(val message: String) {
    BLURRY("The photo is blurred: hold the phone still, tap to focus, and retake."),
    TOO_DARK("The photo is too dark: add light (avoid the flash glare) and retake."),
    TOO_BRIGHT("The photo is too bright: reduce light or move out of direct sun, and retake."),
    GLARE("Part of the photo is washed out (glare): change the angle and retake."),
    OFF_CENTRE("The lesion is not centred: put it in the middle of the square and retake."),
    NO_CONTRAST("No distinct lesion in the square: move closer and retake.")
}

/** Thresholds of the acquisition checks; heuristics, tune them per phone (README). */
class AcquisitionThresholds(
    /** Minimum variance of the Laplacian of the guide region at [Acquisition.ANALYSIS_SIDE] px. */
    val minSharpness: Double = 30.0,
    val minMeanLuma: Double = 50.0,
    val maxMeanLuma: Double = 215.0,
    /** Largest share of pixels at luma >= 250. */
    val maxBrightFraction: Double = 0.05,
    /** Largest distance of the dark-spot centroid from the centre, as a share of the region side. */
    val maxCentreOffset: Double = 0.25,
    /** Smallest standard deviation of luma for a lesion to stand out from skin. */
    val minLumaStd: Double = 6.0
)

/** The measured figures and the issues they raise. */
class AcquisitionReport(
    val sharpness: Double,
    val meanLuma: Double,
    val brightFraction: Double,
    val lumaStd: Double,
    /** Distance of the darker region's centroid from the centre (share of the side); NaN without contrast. */
    val centreOffset: Double,
    val issues: List<AcquisitionIssue>
) {
    val ok: Boolean get() = issues.isEmpty()
}

/**
 * Acquisition checks in the spirit of standardised mobile dermatology photography:
 * sharpness (variance of the Laplacian), exposure (mean luma, blown highlights) and framing
 * (is the darker lesion near the centre of the guide?). Run them on the guide region.
 */
object Acquisition {
    /** The region is box-averaged down to about this side before measuring, so figures do not depend on resolution. */
    const val ANALYSIS_SIDE = 256

    /** Luma (ITU-R BT.601, 0-255) of ARGB pixels. */
    fun luma(pixels: IntArray): DoubleArray = DoubleArray(pixels.size) {
        val p = pixels[it]
        0.299 * ((p shr 16) and 0xFF) + 0.587 * ((p shr 8) and 0xFF) + 0.114 * (p and 0xFF)
    }

    /** Box-average [gray] ([w] x [h]) by an integer factor so the longer side is at most [maxSide]. */
    fun downscale(gray: DoubleArray, w: Int, h: Int, maxSide: Int): Triple<DoubleArray, Int, Int> {
        val f = Math.max(1, Math.ceil(Math.max(w, h).toDouble() / maxSide).toInt())
        if (f == 1) return Triple(gray, w, h)
        val ow = w / f
        val oh = h / f
        val out = DoubleArray(ow * oh)
        for (y in 0 until oh) for (x in 0 until ow) {
            var s = 0.0
            for (dy in 0 until f) for (dx in 0 until f) s += gray[(y * f + dy) * w + x * f + dx]
            out[y * ow + x] = s / (f * f)
        }
        return Triple(out, ow, oh)
    }

    /** Variance of the 4-neighbour Laplacian over the interior of [gray]; 0 for images under 3x3. */
    fun laplacianVariance(gray: DoubleArray, w: Int, h: Int): Double {
        if (w < 3 || h < 3) return 0.0
        var sum = 0.0
        var sumSq = 0.0
        var n = 0
        for (y in 1 until h - 1) for (x in 1 until w - 1) {
            val i = y * w + x
            val lap = gray[i - w] + gray[i + w] + gray[i - 1] + gray[i + 1] - 4.0 * gray[i]
            sum += lap
            sumSq += lap * lap
            n++
        }
        val mean = sum / n
        return Math.max(0.0, sumSq / n - mean * mean)
    }

    /**
     * Distance of the centroid of the darker pixels (luma below mean - std) from the image centre,
     * as a share of the shorter side; NaN when nothing is darker.
     */
    fun darkCentroidOffset(gray: DoubleArray, w: Int, h: Int, mean: Double, std: Double): Double {
        val cut = mean - std
        var sx = 0.0
        var sy = 0.0
        var n = 0
        for (y in 0 until h) for (x in 0 until w) {
            if (gray[y * w + x] < cut) {
                sx += x + 0.5
                sy += y + 0.5
                n++
            }
        }
        if (n == 0) return Double.NaN
        val dx = sx / n - w / 2.0
        val dy = sy / n - h / 2.0
        return Math.sqrt(dx * dx + dy * dy) / Math.min(w, h)
    }

    /** Measure [pixels] ([w] x [h], ARGB; normally the guide region) and list what to fix. */
    fun check(pixels: IntArray, w: Int, h: Int, t: AcquisitionThresholds = AcquisitionThresholds()): AcquisitionReport {
        if (w < 1 || h < 1 || pixels.size != w * h) {
            throw IllegalArgumentException("image of ${w}x$h needs ${w * h} pixels, got ${pixels.size}")
        }
        val full = luma(pixels)
        var bright = 0
        for (v in full) if (v >= 250.0) bright++
        val (gray, gw, gh) = downscale(full, w, h, ANALYSIS_SIDE)
        var sum = 0.0
        for (v in gray) sum += v
        val mean = sum / gray.size
        var sq = 0.0
        for (v in gray) sq += (v - mean) * (v - mean)
        val std = Math.sqrt(sq / gray.size)
        val sharpness = laplacianVariance(gray, gw, gh)
        val brightFraction = bright.toDouble() / full.size
        val offset = if (std >= t.minLumaStd) darkCentroidOffset(gray, gw, gh, mean, std) else Double.NaN

        val issues = ArrayList<AcquisitionIssue>()
        if (sharpness < t.minSharpness) issues.add(AcquisitionIssue.BLURRY)
        if (mean < t.minMeanLuma) issues.add(AcquisitionIssue.TOO_DARK)
        if (mean > t.maxMeanLuma) issues.add(AcquisitionIssue.TOO_BRIGHT)
        else if (brightFraction > t.maxBrightFraction) issues.add(AcquisitionIssue.GLARE)
        if (std < t.minLumaStd) issues.add(AcquisitionIssue.NO_CONTRAST)
        else if (!offset.isNaN() && offset > t.maxCentreOffset) issues.add(AcquisitionIssue.OFF_CENTRE)
        return AcquisitionReport(sharpness, mean, brightFraction, std, offset, issues)
    }
}
