package org.edgederm.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test

class JsonTest {
    @Test
    fun parsesNestedValues() {
        val v = Json.parse("""{"a": [1, -2.5e1, true, null], "s": "x\"\\\u00e9\n", "o": {}}""") as Map<*, *>
        assertEquals(listOf(1L, -25.0, true, null), v["a"])
        assertEquals("x\"\\\u00e9\n", v["s"])
        assertEquals(emptyMap<String, Any?>(), v["o"])
    }

    @Test
    fun acceptsPythonSpecialFloats() {
        val v = Json.parse("[NaN, Infinity, -Infinity]") as List<*>
        assertTrue((v[0] as Double).isNaN())
        assertEquals(Double.POSITIVE_INFINITY, v[1])
        assertEquals(Double.NEGATIVE_INFINITY, v[2])
    }

    @Test
    fun rejectsMalformedDocuments() {
        for (bad in listOf("", "{", "[1,]", "{\"a\" 1}", "[1] x", "\"abc", "{'a': 1}", "tru", "[01x]")) {
            try {
                Json.parse(bad)
                fail("accepted: $bad")
            } catch (e: JsonException) {
                assertTrue(e.message!!.startsWith("invalid JSON"))
            }
        }
    }

    @Test
    fun fieldsByDottedPath() {
        val f = JsonFields.parse("""{"input": {"size": [3, 4], "scale": 0.5, "name": "x"}, "n": null}""", "doc")
        assertEquals(listOf(3, 4), f.reqIntList("input.size"))
        assertEquals(0.5, f.reqDouble("input.scale"), 0.0)
        assertEquals("dflt", f.optString("input.missing", "dflt"))
        assertNull(f.optDouble("n"))
        assertFalse(f.has("n"))
        try {
            f.reqInt("input.zero_point")
            fail("missing field accepted")
        } catch (e: JsonException) {
            assertEquals("doc: field 'input.zero_point' is missing", e.message)
        }
        try {
            f.reqInt("input.scale")
            fail("0.5 accepted as an integer")
        } catch (e: JsonException) {
            assertEquals("doc: field 'input.scale' must be an integer", e.message)
        }
        try {
            f.reqString("input.size")
            fail("a list accepted as a string")
        } catch (e: JsonException) {
            assertTrue(e.message!!.contains("must be a string"))
        }
    }
}
