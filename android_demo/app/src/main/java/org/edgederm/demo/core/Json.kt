package org.edgederm.demo.core

/** A malformed JSON document or a missing / mistyped field; the message is one line for the user. */
class JsonException(message: String) : Exception(message)

/**
 * A small strict JSON parser, so the core compiles with plain kotlinc (no org.json, no Android).
 *
 * Objects become LinkedHashMap<String, Any?>, arrays List<Any?>, integers Long, other numbers
 * Double, plus String, Boolean and null. NaN / Infinity / -Infinity are accepted because Python's
 * json module writes them.
 */
object Json {
    private const val MAX_DEPTH = 200

    fun parse(text: String): Any? {
        val p = Parser(text)
        p.skipWhitespace()
        val value = p.value(0)
        p.skipWhitespace()
        if (!p.atEnd()) p.fail("unexpected text after the JSON value")
        return value
    }

    private class Parser(val s: String) {
        var i = 0

        fun atEnd() = i >= s.length

        fun fail(what: String): Nothing = throw JsonException("invalid JSON at character $i: $what")

        fun skipWhitespace() {
            while (i < s.length && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++
        }

        fun value(depth: Int): Any? {
            if (depth > MAX_DEPTH) fail("nested too deeply")
            if (atEnd()) fail("unexpected end")
            val c = s[i]
            return when {
                c == '{' -> obj(depth)
                c == '[' -> array(depth)
                c == '"' -> string()
                c == '-' || c == 'N' || c == 'I' || (c >= '0' && c <= '9') -> number()
                s.startsWith("true", i) -> { i += 4; true }
                s.startsWith("false", i) -> { i += 5; false }
                s.startsWith("null", i) -> { i += 4; null }
                else -> fail("unexpected character '$c'")
            }
        }

        fun obj(depth: Int): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++
            skipWhitespace()
            if (i < s.length && s[i] == '}') { i++; return out }
            while (true) {
                skipWhitespace()
                if (atEnd() || s[i] != '"') fail("expected a quoted key")
                val key = string()
                skipWhitespace()
                if (atEnd() || s[i] != ':') fail("expected ':'")
                i++
                skipWhitespace()
                out[key] = value(depth + 1)
                skipWhitespace()
                if (atEnd()) fail("unterminated object")
                when (s[i]) {
                    ',' -> i++
                    '}' -> { i++; return out }
                    else -> fail("expected ',' or '}'")
                }
            }
        }

        fun array(depth: Int): List<Any?> {
            val out = ArrayList<Any?>()
            i++
            skipWhitespace()
            if (i < s.length && s[i] == ']') { i++; return out }
            while (true) {
                skipWhitespace()
                out.add(value(depth + 1))
                skipWhitespace()
                if (atEnd()) fail("unterminated array")
                when (s[i]) {
                    ',' -> i++
                    ']' -> { i++; return out }
                    else -> fail("expected ',' or ']'")
                }
            }
        }

        fun string(): String {
            val sb = StringBuilder()
            i++ // opening quote
            while (true) {
                if (atEnd()) fail("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> return sb.toString()
                    c == '\\' -> {
                        if (atEnd()) fail("unterminated escape")
                        when (val e = s[i++]) {
                            '"' -> sb.append('"')
                            '\\' -> sb.append('\\')
                            '/' -> sb.append('/')
                            'b' -> sb.append('\b')
                            'f' -> sb.append('\u000C')
                            'n' -> sb.append('\n')
                            'r' -> sb.append('\r')
                            't' -> sb.append('\t')
                            'u' -> {
                                if (i + 4 > s.length) fail("short \\u escape")
                                val code = s.substring(i, i + 4).toIntOrNull(16) ?: fail("bad \\u escape")
                                sb.append(code.toChar())
                                i += 4
                            }
                            else -> fail("bad escape '\\$e'")
                        }
                    }
                    c < ' ' -> fail("control character in string")
                    else -> sb.append(c)
                }
            }
        }

        fun number(): Any {
            for (special in arrayOf("NaN", "Infinity", "-Infinity")) {
                if (s.startsWith(special, i)) {
                    i += special.length
                    return when (special) {
                        "NaN" -> Double.NaN
                        "Infinity" -> Double.POSITIVE_INFINITY
                        else -> Double.NEGATIVE_INFINITY
                    }
                }
            }
            val start = i
            if (s[i] == '-') i++
            var integral = true
            while (i < s.length) {
                val c = s[i]
                if (c >= '0' && c <= '9') {
                    i++
                } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
                    integral = false
                    i++
                } else {
                    break
                }
            }
            val token = s.substring(start, i)
            if (token == "-" || token.length == 0) fail("bad number")
            if (integral) token.toLongOrNull()?.let { return it }
            return token.toDoubleOrNull() ?: fail("bad number '$token'")
        }
    }
}

/**
 * Typed access to a parsed JSON object by dotted path ("input.zero_point").
 *
 * Every field the app reads goes through a req* or opt* call with a literal path, so the
 * Python contract test (tests/test_android_contract.py) can list them from this source.
 */
class JsonFields(private val root: Map<String, Any?>, private val source: String) {

    private fun find(path: String): Pair<Boolean, Any?> {
        var node: Any? = root
        for (part in path.split('.')) {
            val map = node as? Map<*, *> ?: return Pair(false, null)
            if (!map.containsKey(part)) return Pair(false, null)
            node = map[part]
        }
        return Pair(true, node)
    }

    private fun required(path: String): Any {
        val (found, value) = find(path)
        if (!found || value == null) throw JsonException("$source: field '$path' is missing")
        return value
    }

    private fun bad(path: String, expected: String): Nothing =
        throw JsonException("$source: field '$path' must be $expected")

    private fun asDouble(path: String, v: Any?): Double = when (v) {
        is Long -> v.toDouble()
        is Double -> v
        else -> bad(path, "a number")
    }

    private fun asInt(path: String, v: Any?): Int {
        val d = asDouble(path, v)
        if (d != Math.floor(d) || d > Int.MAX_VALUE || d < Int.MIN_VALUE) bad(path, "an integer")
        return d.toInt()
    }

    private fun asList(path: String, v: Any?): List<*> = v as? List<*> ?: bad(path, "a list")

    private fun asMap(path: String, v: Any?): Map<*, *> = v as? Map<*, *> ?: bad(path, "an object")

    fun has(path: String): Boolean = find(path).second != null

    fun reqString(path: String): String = required(path) as? String ?: bad(path, "a string")

    fun optString(path: String, default: String): String {
        val (found, v) = find(path)
        if (!found || v == null) return default
        return v as? String ?: bad(path, "a string")
    }

    fun reqInt(path: String): Int = asInt(path, required(path))

    fun optInt(path: String, default: Int): Int {
        val (found, v) = find(path)
        return if (!found || v == null) default else asInt(path, v)
    }

    fun reqDouble(path: String): Double = asDouble(path, required(path))

    fun optDouble(path: String): Double? {
        val (found, v) = find(path)
        return if (!found || v == null) null else asDouble(path, v)
    }

    fun optBoolean(path: String): Boolean? {
        val (found, v) = find(path)
        if (!found || v == null) return null
        return v as? Boolean ?: bad(path, "true or false")
    }

    fun reqIntList(path: String): List<Int> = asList(path, required(path)).map { asInt(path, it) }

    fun reqDoubleList(path: String): List<Double> = asList(path, required(path)).map { asDouble(path, it) }

    fun optDoubleList(path: String): List<Double>? {
        val (found, v) = find(path)
        return if (!found || v == null) null else asList(path, v).map { asDouble(path, it) }
    }

    fun reqStringList(path: String): List<String> =
        asList(path, required(path)).map { it as? String ?: bad(path, "a list of strings") }

    fun optStringList(path: String): List<String>? {
        val (found, v) = find(path)
        return if (!found || v == null) null else asList(path, v).map { it as? String ?: bad(path, "a list of strings") }
    }

    fun reqStringMap(path: String): Map<String, String> = toStringMap(path, asMap(path, required(path)))

    fun optStringMap(path: String): Map<String, String> {
        val (found, v) = find(path)
        return if (!found || v == null) emptyMap() else toStringMap(path, asMap(path, v))
    }

    private fun toStringMap(path: String, map: Map<*, *>): Map<String, String> {
        val out = LinkedHashMap<String, String>()
        for ((k, v) in map) out[k as String] = v as? String ?: bad(path, "an object of strings")
        return out
    }

    /** A list of objects, each wrapped for typed access. */
    fun reqObjectList(path: String): List<JsonFields> = asList(path, required(path)).mapIndexed { n, item ->
        @Suppress("UNCHECKED_CAST")
        JsonFields(item as? Map<String, Any?> ?: bad(path, "a list of objects"), "$source $path[$n]")
    }

    companion object {
        /** Parse [text] as a JSON object; [source] names the document in error messages. */
        fun parse(text: String, source: String): JsonFields {
            val value = try {
                Json.parse(text)
            } catch (e: JsonException) {
                throw JsonException("$source: ${e.message}")
            }
            @Suppress("UNCHECKED_CAST")
            val map = value as? Map<String, Any?> ?: throw JsonException("$source: expected a JSON object")
            return JsonFields(map, source)
        }
    }
}
