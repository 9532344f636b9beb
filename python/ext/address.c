/*
 * address.c: IP addresses between Python text ("192.0.2.1", "2001:db8::1")
 * and the 16-byte form of struct fp_segment and struct fp_tuple, for every
 * type of the extension.
 */
#include "core.h"

#include <arpa/inet.h>

const char *core_text(const char *what, PyObject *text)
{
	Py_ssize_t len;
	const char *s = PyUnicode_AsUTF8AndSize(text, &len);
	if (s && strlen(s) != (size_t)len) {
		PyErr_Format(PyExc_ValueError, "%s: %R holds a NUL character",
			     what, text);
		return NULL;
	}
	return s;
}

int core_parse_address(const char *what, PyObject *text, uint8_t *addr,
		       uint8_t *family)
{
	if (!PyUnicode_Check(text)) {
		PyErr_Format(PyExc_TypeError,
			     "%s must be an IP address as str, not %.100s",
			     what, Py_TYPE(text)->tp_name);
		return -1;
	}
	const char *s = core_text(what, text);
	if (!s)
		return -1;
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, s, addr) == 1) {
		*family = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, s, addr) == 1) {
		*family = 6;
		return 0;
	}
	PyErr_Format(PyExc_ValueError, "%s: %R is not an IPv4 or IPv6 address",
		     what, text);
	return -1;
}

/* IPv4 by hand: glibc's inet_ntop goes through sprintf, which was the
 * largest single cost of reading a parsed segment's fields. */
static size_t ipv4_text(const uint8_t *a, char *out)
{
	char *o = out;
	for (int i = 0; i < 4; i++) {
		unsigned v = a[i];
		if (v >= 100)
			*o++ = (char)('0' + v / 100);
		if (v >= 10)
			*o++ = (char)('0' + v / 10 % 10);
		*o++ = (char)('0' + v % 10);
		*o++ = '.';
	}
	*--o = '\0';
	return (size_t)(o - out);
}

/* The text of an address into out (INET6_ADDRSTRLEN bytes); its length, or
 * 0 if family is neither 4 nor 6. */
size_t core_address_text(int family, const uint8_t *addr, char *out)
{
	if (family == 4)
		return ipv4_text(addr, out);
	if (family == 6 && inet_ntop(AF_INET6, addr, out, INET6_ADDRSTRLEN))
		return strlen(out);
	return 0;
}

PyObject *core_format_address(int family, const uint8_t *addr)
{
	char text[INET6_ADDRSTRLEN];
	size_t len = core_address_text(family, addr, text);
	if (!len)
		Py_RETURN_NONE;
	return PyUnicode_DecodeASCII(text, (Py_ssize_t)len, NULL);
}
