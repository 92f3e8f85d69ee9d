package org.edgederm.demo.core

/**
 * How big the app lets an image get in memory. A 50 MP gallery photo decoded whole is 200 MB of
 * ARGB_8888, more than most apps' heap: gallery images are decoded with a power-of-two
 * `inSampleSize` under [MAX_DECODE_PIXELS], camera frames are requested near
 * [CAPTURE_WIDTH] x [CAPTURE_HEIGHT] (CameraX ResolutionSelector) and the guide crop is capped at
 * [MAX_CROP_SIDE]. The model sees a few hundred pixels; the acquisition checks about 256.
 */
object ImageBudget {
    /** Most pixels a decoded gallery image may have (32 MB as ARGB_8888, the same again as an IntArray). */
    const val MAX_DECODE_PIXELS = 8_000_000L

    /** The capture resolution asked of CameraX (about 3 MP, 4:3); the closest lower one is taken. */
    const val CAPTURE_WIDTH = 2048
    const val CAPTURE_HEIGHT = 1536

    /** Largest side of the square cropped out of a camera frame (larger crops are scaled down). */
    const val MAX_CROP_SIDE = 1536

    /**
     * The smallest power-of-two `BitmapFactory.Options.inSampleSize` that decodes a [width] x
     * [height] image to at most [maxPixels] pixels. Decoded sides are counted rounded up
     * ([decodedSide]), so the budget holds for every decoder's rounding.
     */
    fun sampleSize(width: Int, height: Int, maxPixels: Long = MAX_DECODE_PIXELS): Int {
        require(width > 0 && height > 0) { "image size ${width}x$height is not positive" }
        require(maxPixels > 0) { "pixel budget $maxPixels is not positive" }
        var sample = 1
        while (decodedSide(width, sample).toLong() * decodedSide(height, sample) > maxPixels) sample *= 2
        return sample
    }

    /** A side of [side] pixels decoded with [sample]: at most ceil(side / sample). */
    fun decodedSide(side: Int, sample: Int): Int = (side + sample - 1) / sample

    /** Bytes of a [width] x [height] ARGB_8888 bitmap. */
    fun argbBytes(width: Int, height: Int): Long = 4L * width * height

    /** Scale to apply to a crop of [side] pixels so it is at most [maxSide] (1 when it already is). */
    fun cropScale(side: Int, maxSide: Int = MAX_CROP_SIDE): Double {
        require(side > 0 && maxSide > 0) { "sides must be positive" }
        return if (side <= maxSide) 1.0 else maxSide.toDouble() / side
    }
}
