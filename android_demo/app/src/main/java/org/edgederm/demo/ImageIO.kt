package org.edgederm.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import androidx.exifinterface.media.ExifInterface
import java.io.InputStream

/** An image as ARGB pixels, the form the core code works on. */
class Pixels(val argb: IntArray, val width: Int, val height: Int)

/**
 * Decoding as edge_derm.data.images.load_rgb does: EXIF orientation applied, transparency
 * composited on white, full resolution (no density scaling) up to [MAX_PIXELS].
 */
object ImageIO {
    /** Above this, photos are decoded at a reduced size (memory); the host would use them whole. */
    const val MAX_PIXELS = 24_000_000

    fun decode(open: () -> InputStream): Pixels {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open().use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IllegalArgumentException("not a readable image")
        var sample = 1
        while (bounds.outWidth.toLong() * bounds.outHeight / (sample.toLong() * sample) > MAX_PIXELS) sample *= 2
        val opts = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
            inSampleSize = sample
        }
        val raw = open().use { BitmapFactory.decodeStream(it, null, opts) }
            ?: throw IllegalArgumentException("not a readable image")
        val orientation = open().use { ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL) }
        return fromBitmap(orient(raw, orientation))
    }

    fun fromBitmap(bitmap: Bitmap): Pixels {
        val w = bitmap.width
        val h = bitmap.height
        val px = IntArray(w * h)
        bitmap.getPixels(px, 0, w, 0, 0, w, h) // unpremultiplied ARGB
        for (i in px.indices) {
            val a = px[i] ushr 24
            if (a != 0xFF) px[i] = onWhite(px[i], a)
        }
        return Pixels(px, w, h)
    }

    private fun onWhite(p: Int, a: Int): Int {
        fun mix(c: Int) = (c * a + 255 * (255 - a) + 127) / 255
        return (0xFF shl 24) or (mix((p shr 16) and 0xFF) shl 16) or (mix((p shr 8) and 0xFF) shl 8) or mix(p and 0xFF)
    }

    /** Rotate / mirror by an EXIF orientation (exact pixel moves, no filtering). */
    fun orient(bitmap: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.setScale(-1f, 1f)
            ExifInterface.ORIENTATION_ROTATE_180 -> m.setRotate(180f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.setScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { m.setRotate(90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_90 -> m.setRotate(90f)
            ExifInterface.ORIENTATION_TRANSVERSE -> { m.setRotate(-90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_ROTATE_270 -> m.setRotate(-90f)
            else -> return bitmap
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, false)
    }

    /** Rotate a camera frame by the degrees CameraX reports. */
    fun rotate(bitmap: Bitmap, degrees: Int): Bitmap {
        if (degrees % 360 == 0) return bitmap
        val m = Matrix().apply { setRotate(degrees.toFloat()) }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, false)
    }
}
