/*
 * segment_type.c: finprobe._core.Segment, a TCP segment with its IP
 * addresses, over struct fp_segment. Immutable: replace() makes a changed
 * copy. The codec work (bytes(seg), Segment.parse) is segment.c's.
 *
 * Conversions between Python values and the C struct live here and only
 * here: flags as "FSRPAUEC" letters, options as tuples, addresses as text.
 */
#include "core.h"

#include <arpa/inet.h>
#include <math.h>

#define TCP_OPTION_SPACE                                                       \
	40 /* a data offset of 15 words less the 20-byte header */

/* ---- scalar fields -------------------------------------------------------- */

static int flags_arg(PyObject *value, uint8_t *flags)
{
	unsigned long long bits;
	if (PyLong_Check(value)) {
		if (core_unsigned_arg(value, "flags", 0xff, &bits) < 0)
			return -1;
		*flags = (uint8_t)bits;
		return 0;
	}
	if (!PyUnicode_Check(value)) {
		PyErr_Format(
			PyExc_TypeError,
			"flags must be a str of \"FSRPAUEC\" letters, not %.100s",
			Py_TYPE(value)->tp_name);
		return -1;
	}
	const char *text = core_text("flags", value);
	if (!text)
		return -1;
	if (fp_flags_parse(text, flags) < 0) {
		PyErr_Format(
			PyExc_ValueError,
			"flags: %R is not a set of the letters F S R P A U E C (each at most once)",
			value);
		return -1;
	}
	return 0;
}

/* ---- options: tuples <-> struct fp_option --------------------------------- */

static const struct {
	const char *name;
	uint8_t kind;
} option_names[] = {
	{ "mss", FP_OPT_MSS },	     { "wscale", FP_OPT_WSCALE },
	{ "sackok", FP_OPT_SACKOK }, { "sack", FP_OPT_SACK },
	{ "ts", FP_OPT_TS },	     { "nop", FP_OPT_NOP },
	{ "eol", FP_OPT_EOL },
};

/* The kind an option's name stands for, or -1 if it names none. */
static int option_kind_of(PyObject *name)
{
	const char *text = PyUnicode_Check(name) ? core_text("options", name)
						 : NULL;
	if (!text) {
		/* a lone surrogate or a NUL: just another unknown name */
		PyErr_Clear();
		return -1;
	}
	for (size_t i = 0; i < sizeof(option_names) / sizeof(option_names[0]);
	     i++)
		if (strcmp(text, option_names[i].name) == 0)
			return option_names[i].kind;
	return -1;
}

static int option_arity(PyObject *t, Py_ssize_t n, const char *shape)
{
	if (PyTuple_GET_SIZE(t) != n) {
		PyErr_Format(PyExc_ValueError, "options: %R must be %s", t,
			     shape);
		return -1;
	}
	return 0;
}

/* A number inside option opt; the message shows the whole option, as the
 * argument the caller wrote is the options list. */
static int option_u32(PyObject *opt, PyObject *value, unsigned long long max,
		      uint32_t *out)
{
	unsigned long long v;
	switch (core_unsigned_check(value, max, &v)) {
	case CORE_NUM_OK:
		*out = (uint32_t)v;
		return 0;
	case CORE_NUM_TYPE:
		PyErr_Format(PyExc_TypeError, "options: %R: %R is not an int",
			     opt, value);
		return -1;
	case CORE_NUM_RANGE:
		PyErr_Format(PyExc_ValueError,
			     "options: %R: %R is not in 0..%llu", opt, value,
			     max);
		return -1;
	}
	return -1;
}

static int sack_from_tuple(PyObject *t, struct fp_option *o)
{
	PyObject *blocks = PyTuple_GET_ITEM(t, 1);
	if (!PyTuple_Check(blocks) && !PyList_Check(blocks))
		goto bad;
	PyObject *seq = PySequence_Fast(blocks, "sack blocks");
	if (!seq)
		return -1;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	int ok = n >= 1 && n <= FP_MAX_SACK_BLOCKS;
	for (Py_ssize_t i = 0; ok && i < n; i++) {
		PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
		ok = PyTuple_Check(b) && PyTuple_GET_SIZE(b) == 2 &&
		     option_u32(t, PyTuple_GET_ITEM(b, 0), 0xffffffffu,
				&o->v.sack.edge[i][0]) == 0 &&
		     option_u32(t, PyTuple_GET_ITEM(b, 1), 0xffffffffu,
				&o->v.sack.edge[i][1]) == 0;
	}
	Py_DECREF(seq);
	if (PyErr_Occurred())
		return -1;
	if (!ok)
		goto bad;
	o->v.sack.count = (uint8_t)n;
	return 0;
bad:
	PyErr_Format(
		PyExc_ValueError,
		"options: %R must be (\"sack\", ((left, right), ...)) with 1 to 4 blocks",
		t);
	return -1;
}

static int raw_option_from_tuple(PyObject *t, struct fp_option *o)
{
	uint32_t kind;
	if (option_arity(t, 2, "(kind, b\"raw bytes\")") < 0 ||
	    option_u32(t, PyTuple_GET_ITEM(t, 0), 255, &kind) < 0)
		return -1;
	/* Kind 1 is one byte on the wire: a body would be read back as more
	 * options. Kind 0 with bytes is an EOL and the bytes after it. */
	if (kind == FP_OPT_NOP) {
		PyErr_Format(
			PyExc_ValueError,
			"options: %R: kind 1 is (\"nop\",), which has no length or body",
			t);
		return -1;
	}
	PyObject *body = PyTuple_GET_ITEM(t, 1);
	/* an EOL's bytes have no length byte */
	int most = FP_MAX_OPTION_BODY + (kind == FP_OPT_EOL);
	if (!PyBytes_Check(body) || PyBytes_GET_SIZE(body) > most) {
		PyErr_Format(
			PyExc_ValueError,
			"options: %R: the body must be bytes of at most %d", t,
			most);
		return -1;
	}
	o->kind = (uint8_t)kind;
	o->raw = 1;
	o->len = (uint8_t)PyBytes_GET_SIZE(body);
	memcpy(o->v.body, PyBytes_AS_STRING(body), o->len);
	return 0;
}

static int option_from_tuple(PyObject *t, struct fp_option *o)
{
	memset(o, 0, sizeof(*o));
	if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) == 0) {
		PyErr_Format(
			PyExc_TypeError,
			"options: each option must be a non-empty tuple, got %R",
			t);
		return -1;
	}
	PyObject *name = PyTuple_GET_ITEM(t, 0);
	if (PyLong_Check(name))
		return raw_option_from_tuple(t, o);
	int kind = option_kind_of(name);
	if (kind < 0) {
		PyErr_Format(
			PyExc_ValueError,
			"options: unknown option %R (known: mss, wscale, sackok, sack, ts, nop, eol, "
			"or (kind, b\"raw\"))",
			name);
		return -1;
	}
	o->kind = (uint8_t)kind;
	uint32_t v;
	switch (kind) {
	case FP_OPT_MSS:
		if (option_arity(t, 2, "(\"mss\", value)") < 0 ||
		    option_u32(t, PyTuple_GET_ITEM(t, 1), 0xffff, &v) < 0)
			return -1;
		o->v.mss = (uint16_t)v;
		return 0;
	case FP_OPT_WSCALE:
		if (option_arity(t, 2, "(\"wscale\", shift)") < 0 ||
		    option_u32(t, PyTuple_GET_ITEM(t, 1), 0xff, &v) < 0)
			return -1;
		o->v.wscale = (uint8_t)v;
		return 0;
	case FP_OPT_TS:
		if (option_arity(t, 3, "(\"ts\", tsval, tsecr)") < 0 ||
		    option_u32(t, PyTuple_GET_ITEM(t, 1), 0xffffffffu,
			       &o->v.ts.val) < 0 ||
		    option_u32(t, PyTuple_GET_ITEM(t, 2), 0xffffffffu,
			       &o->v.ts.ecr) < 0)
			return -1;
		return 0;
	case FP_OPT_SACK:
		if (option_arity(t, 2, "(\"sack\", ((left, right), ...))") < 0)
			return -1;
		return sack_from_tuple(t, o);
	default: /* sackok, nop, eol */
		return option_arity(t, 1, "a 1-tuple such as (\"nop\",)");
	}
}

/* Checked here rather than at bytes(seg) so that the error names the
 * argument at the line that made it. */
static int options_fit(const struct fp_segment *seg)
{
	size_t n = fp_segment_options_len(seg);
	if (n <= TCP_OPTION_SPACE)
		return 0;
	const struct fp_option *last = &seg->options[seg->n_options - 1];
	PyErr_Format(
		PyExc_ValueError,
		"options: %zu bytes do not fit in the 40 a TCP header holds%s",
		n,
		last->kind == FP_OPT_EOL && !last->raw
			? " (an EOL ending the list takes a word of zeros, to be told from padding)"
			: "");
	return -1;
}

/* The options as Segment.parse would read them back from the wire, so
 * that a Segment equals its own parse: a raw option of a known kind and
 * its standard length is decoded ((2, b"\x05\xb4") is ("mss", 1460)), a
 * raw EOL's bytes that read as options are those options. Lists of other
 * forms come back unchanged. The codec decides, from a packet of its own. */
static void options_canonical(struct fp_segment *seg)
{
	struct fp_segment alone = { .family = 4, .n_options = seg->n_options },
			  back;
	uint8_t pkt[FP_MAX_HEADERS];
	memcpy(alone.options, seg->options,
	       seg->n_options * sizeof(seg->options[0]));
	ssize_t n = fp_segment_build(&alone, pkt, sizeof(pkt));
	if (n > 0 && fp_segment_parse(&back, pkt, (size_t)n, NULL, 0) == 0) {
		memcpy(seg->options, back.options,
		       back.n_options * sizeof(back.options[0]));
		seg->n_options = back.n_options;
	}
}

static int options_arg(PyObject *value, struct fp_segment *seg)
{
	PyObject *seq =
		PySequence_Fast(value, "options must be a sequence of tuples");
	if (!seq)
		return -1;
	Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
	int rc = 0;
	if (n > FP_MAX_OPTIONS) {
		PyErr_Format(PyExc_ValueError,
			     "options: %zd options do not fit in 40 bytes", n);
		rc = -1;
	}
	for (Py_ssize_t i = 0; rc == 0 && i < n; i++)
		rc = option_from_tuple(PySequence_Fast_GET_ITEM(seq, i),
				       &seg->options[i]);
	Py_DECREF(seq);
	seg->n_options = rc == 0 ? (uint8_t)n : 0;
	if (rc == 0 && options_fit(seg) < 0) {
		seg->n_options = 0;
		rc = -1;
	}
	if (rc == 0 && n > 0)
		options_canonical(seg);
	return rc;
}

/* A tuple of the n new references in items, which it takes over; NULL,
 * with all of them released, if any is NULL. Py_BuildValue would parse a
 * format string for every option of every segment read. */
static PyObject *tuple_steal(Py_ssize_t n, PyObject **items)
{
	PyObject *t = NULL;
	for (Py_ssize_t i = 0; i < n; i++)
		if (!items[i])
			goto fail;
	t = PyTuple_New(n);
	if (!t)
		goto fail;
	for (Py_ssize_t i = 0; i < n; i++)
		PyTuple_SET_ITEM(t, i, items[i]);
	return t;
fail:
	for (Py_ssize_t i = 0; i < n; i++)
		Py_XDECREF(items[i]);
	return NULL;
}

static PyObject *sack_blocks(const struct fp_option *o)
{
	PyObject *blocks = PyTuple_New(o->v.sack.count);
	for (int i = 0; blocks && i < o->v.sack.count; i++) {
		PyObject *edge[2] = {
			PyLong_FromUnsignedLong(o->v.sack.edge[i][0]),
			PyLong_FromUnsignedLong(o->v.sack.edge[i][1])
		};
		PyObject *b = tuple_steal(2, edge);
		if (!b)
			Py_CLEAR(blocks);
		else
			PyTuple_SET_ITEM(blocks, i, b);
	}
	return blocks;
}

static const char *option_name(uint8_t kind)
{
	for (size_t i = 0; i < sizeof(option_names) / sizeof(option_names[0]);
	     i++)
		if (option_names[i].kind == kind)
			return option_names[i].name;
	return NULL;
}

static PyObject *option_to_tuple(const struct fp_option *o)
{
	PyObject *v[3];
	const char *name = o->raw ? NULL : option_name(o->kind);
	if (!name) { /* (kind, b"body") */
		v[0] = PyLong_FromLong(o->kind);
		v[1] = PyBytes_FromStringAndSize((const char *)o->v.body,
						 o->raw ? o->len : 0);
		return tuple_steal(2, v);
	}
	v[0] = PyUnicode_FromString(name);
	switch (o->kind) {
	case FP_OPT_MSS:
		v[1] = PyLong_FromLong(o->v.mss);
		return tuple_steal(2, v);
	case FP_OPT_WSCALE:
		v[1] = PyLong_FromLong(o->v.wscale);
		return tuple_steal(2, v);
	case FP_OPT_TS:
		v[1] = PyLong_FromUnsignedLong(o->v.ts.val);
		v[2] = PyLong_FromUnsignedLong(o->v.ts.ecr);
		return tuple_steal(3, v);
	case FP_OPT_SACK:
		v[1] = sack_blocks(o);
		return tuple_steal(2, v);
	default: /* eol, nop, sackok */
		return tuple_steal(1, v);
	}
}

static PyObject *options_to_tuple(const struct fp_option *options, Py_ssize_t n)
{
	PyObject *t = PyTuple_New(n);
	for (Py_ssize_t i = 0; t && i < n; i++) {
		PyObject *o = option_to_tuple(&options[i]);
		if (!o) {
			Py_CLEAR(t);
			break;
		}
		PyTuple_SET_ITEM(t, i, o);
	}
	return t;
}

/* ---- construction --------------------------------------------------------- */

/* A Segment with room for n options, no payload, never on the wire.
 * Not tp_alloc: PyType_GenericAlloc gives every object one item more than
 * asked, 44 bytes that a segment of a few options would pay for nothing. */
static SegmentObject *segment_alloc(PyTypeObject *type, Py_ssize_t n)
{
	SegmentObject *self = PyObject_GC_NewVar(SegmentObject, type, n);
	if (!self)
		return NULL;
	memset((char *)self + sizeof(PyVarObject), 0,
	       offsetof(SegmentObject, options) - sizeof(PyVarObject));
	self->ts = NAN;
	self->direction = Py_NewRef(Py_None);
	PyObject_GC_Track(self);
	return self;
}

/* seg's fields into self, which has room for its options; not the payload,
 * which self holds as bytes. */
static void segment_pack(SegmentObject *self, const struct fp_segment *seg)
{
	self->family = seg->family;
	self->ttl = seg->ttl;
	self->flags = seg->flags;
	memcpy(self->src, seg->src, 16);
	memcpy(self->dst, seg->dst, 16);
	self->sport = seg->sport;
	self->dport = seg->dport;
	self->seq = seg->seq;
	self->ack = seg->ack;
	self->window = seg->window;
	self->urg = seg->urg;
	memcpy(self->options, seg->options,
	       seg->n_options * sizeof(struct fp_option));
	self->force_checksum = seg->force_checksum;
	self->tcp_checksum_ok = seg->tcp_checksum_ok;
	self->ip_checksum_ok = seg->ip_checksum_ok;
	self->checksum = seg->checksum;
}

/* Everything but the option slots past n_options, which no one reads:
 * zeroing all forty would be most of the cost of a small segment. */
static void segment_clear(struct fp_segment *seg)
{
	size_t tail = offsetof(struct fp_segment, payload);
	memset(seg, 0, offsetof(struct fp_segment, options));
	memset((char *)seg + tail, 0, sizeof(*seg) - tail);
}

void segment_unpack(const SegmentObject *self, struct fp_segment *seg)
{
	segment_clear(seg);
	seg->family = self->family;
	seg->ttl = self->ttl;
	seg->flags = self->flags;
	seg->n_options = (uint8_t)Py_SIZE(self);
	memcpy(seg->src, self->src, 16);
	memcpy(seg->dst, self->dst, 16);
	seg->sport = self->sport;
	seg->dport = self->dport;
	seg->seq = self->seq;
	seg->ack = self->ack;
	seg->window = self->window;
	seg->urg = self->urg;
	memcpy(seg->options, self->options,
	       seg->n_options * sizeof(struct fp_option));
	seg->payload = (const uint8_t *)PyBytes_AS_STRING(self->payload);
	seg->payload_len = (size_t)PyBytes_GET_SIZE(self->payload);
	seg->force_checksum = self->force_checksum;
	seg->tcp_checksum_ok = self->tcp_checksum_ok;
	seg->ip_checksum_ok = self->ip_checksum_ok;
	seg->checksum = self->checksum;
}

/* "in" and "out" are held by every segment of a trace: one interned
 * string each rather than one a segment. */
static PyObject *direction_text(const char *direction)
{
	return direction ? PyUnicode_InternFromString(direction)
			 : Py_NewRef(Py_None);
}

PyObject *segment_new_from(core_state *st, const struct fp_segment *seg,
			   double ts, const char *direction)
{
	/* b"" is a shared singleton: an empty payload costs nothing */
	PyObject *payload = PyBytes_FromStringAndSize(
		(const char *)seg->payload, (Py_ssize_t)seg->payload_len);
	PyObject *dir = payload ? direction_text(direction) : NULL;
	SegmentObject *self =
		dir ? segment_alloc(st->segment_type, seg->n_options) : NULL;
	if (!self) {
		Py_XDECREF(payload);
		Py_XDECREF(dir);
		return NULL;
	}
	segment_pack(self, seg);
	self->payload = payload;
	Py_SETREF(self->direction, dir);
	self->has_checksum = 1;
	if (ts >= 0)
		self->ts = ts;
	return (PyObject *)self;
}

enum { SRC_MISSING = 1, DST_MISSING = 2 };

static int addresses_arg(PyObject *src, PyObject *dst, struct fp_segment *seg,
			 uint8_t *unaddressed)
{
	uint8_t fam_src = 0, fam_dst = 0;
	*unaddressed = (uint8_t)((!src || src == Py_None ? SRC_MISSING : 0) |
				 (!dst || dst == Py_None ? DST_MISSING : 0));
	if (src && src != Py_None &&
	    core_parse_address("src", src, seg->src, &fam_src) < 0)
		return -1;
	if (dst && dst != Py_None &&
	    core_parse_address("dst", dst, seg->dst, &fam_dst) < 0)
		return -1;
	if (fam_src && fam_dst && fam_src != fam_dst) {
		PyErr_Format(PyExc_ValueError,
			     "src %R and dst %R are not of the same IP version",
			     src, dst);
		return -1;
	}
	seg->family = fam_src ? fam_src : fam_dst;
	return 0;
}

/* The constructor's arguments in keyword order; NULL where not given. */
enum {
	A_SRC,
	A_DST,
	A_SPORT,
	A_DPORT,
	A_SEQ,
	A_ACK,
	A_FLAGS,
	A_WINDOW,
	A_URG,
	A_OPTIONS,
	A_PAYLOAD,
	A_CHECKSUM,
	A_TTL,
	A_COUNT
};

/* Plain positional calls, as hot loops make them, skip the keyword parser,
 * which was the largest single cost of building a segment. */
static int segment_args(PyObject *args, PyObject *kwargs, PyObject **a)
{
	static char *kw[] = { "src", "dst",	"sport",   "dport",
			      "seq", "ack",	"flags",   "window",
			      "urg", "options", "payload", "checksum",
			      "ttl", NULL };
	Py_ssize_t n = PyTuple_GET_SIZE(args);
	memset(a, 0, A_COUNT * sizeof(*a));
	if ((!kwargs || PyDict_GET_SIZE(kwargs) == 0) && n <= A_PAYLOAD + 1) {
		for (Py_ssize_t i = 0; i < n; i++)
			a[i] = PyTuple_GET_ITEM(args, i);
		return 0;
	}
	return PyArg_ParseTupleAndKeywords(args, kwargs,
					   "|OOOOOOOOOOO$OO:Segment", kw, &a[0],
					   &a[1], &a[2], &a[3], &a[4], &a[5],
					   &a[6], &a[7], &a[8], &a[9], &a[10],
					   &a[11], &a[12])
		       ? 0
		       : -1;
}

static int numbers_arg(PyObject *const *a, struct fp_segment *seg)
{
	static const int at[] = { A_SPORT, A_DPORT,  A_SEQ,
				  A_ACK,   A_WINDOW, A_URG };
	static const char *names[] = { "sport", "dport",  "seq",
				       "ack",	"window", "urg" };
	static const unsigned long long max[] = { 0xffff,      0xffff,
						  0xffffffffu, 0xffffffffu,
						  0xffff,      0xffff };
	unsigned long long n[6] = { 0, 0, 0, 0, 65535, 0 };
	for (int i = 0; i < 6; i++)
		if (a[at[i]] &&
		    core_unsigned_arg(a[at[i]], names[i], max[i], &n[i]) < 0)
			return -1;
	seg->sport = (uint16_t)n[0];
	seg->dport = (uint16_t)n[1];
	seg->seq = (uint32_t)n[2];
	seg->ack = (uint32_t)n[3];
	seg->window = (uint16_t)n[4];
	seg->urg = (uint16_t)n[5];
	return 0;
}

static int checksum_and_ttl_arg(struct fp_segment *seg, PyObject *checksum,
				PyObject *ttl)
{
	unsigned long long v = 64;
	if (checksum && checksum != Py_None) {
		if (core_unsigned_arg(checksum, "checksum", 0xffff, &v) < 0)
			return -1;
		seg->force_checksum = 1;
		seg->checksum = (uint16_t)v;
	}
	if (ttl && core_unsigned_arg(ttl, "ttl", 255, &v) < 0)
		return -1;
	seg->ttl = ttl ? (uint8_t)v : 64;
	return 0;
}

/* The payload as a new bytes object, b"" if none was given. */
static PyObject *payload_arg(PyObject *payload)
{
	if (!payload)
		return PyBytes_FromStringAndSize(NULL, 0);
	PyObject *b = PyUnicode_Check(payload) ? NULL
					       : PyBytes_FromObject(payload);
	if (!b)
		PyErr_Format(PyExc_TypeError,
			     "payload must be bytes-like, not %.100s",
			     Py_TYPE(payload)->tp_name);
	return b;
}

/* The arguments are read into a whole struct fp_segment first (in the
 * order the messages have always come), then the Segment is made with
 * room for the options it carries. */
static PyObject *segment_new(PyTypeObject *type, PyObject *args,
			     PyObject *kwargs)
{
	PyObject *a[A_COUNT];
	if (segment_args(args, kwargs, a) < 0)
		return NULL;
	struct fp_segment seg;
	uint8_t unaddressed;
	segment_clear(&seg);
	if (addresses_arg(a[A_SRC], a[A_DST], &seg, &unaddressed) < 0 ||
	    numbers_arg(a, &seg) < 0 ||
	    (a[A_FLAGS] && flags_arg(a[A_FLAGS], &seg.flags) < 0) ||
	    (a[A_OPTIONS] && options_arg(a[A_OPTIONS], &seg) < 0) ||
	    checksum_and_ttl_arg(&seg, a[A_CHECKSUM], a[A_TTL]) < 0)
		return NULL;
	PyObject *payload = payload_arg(a[A_PAYLOAD]);
	if (!payload)
		return NULL;
	SegmentObject *self = segment_alloc(type, seg.n_options);
	if (!self) {
		Py_DECREF(payload);
		return NULL;
	}
	segment_pack(self, &seg);
	self->payload = payload;
	self->unaddressed = unaddressed;
	self->has_checksum = seg.force_checksum;
	return (PyObject *)self;
}

static int segment_traverse(SegmentObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	return 0;
}

static void segment_dealloc(SegmentObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Py_CLEAR(self->payload);
	Py_CLEAR(self->direction);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* ---- bytes and parse ------------------------------------------------------ */

PyObject *segment_to_bytes(SegmentObject *self)
{
	struct fp_segment whole, *seg = &whole;
	segment_unpack(self, seg);
	if (self->unaddressed) {
		PyErr_Format(PyExc_ValueError,
			     "cannot build a segment without %s",
			     self->unaddressed == (SRC_MISSING | DST_MISSING)
				     ? "src and dst addresses"
			     : self->unaddressed == SRC_MISSING
				     ? "a src address"
				     : "a dst address");
		return NULL;
	}
	/* The exact length up front: a bytes object shrunk afterwards is a
	 * realloc and a copy on every build. */
	size_t cap = (seg->family == 4 ? 20 : 40) + 20 +
		     fp_segment_options_len(seg) + seg->payload_len;
	PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
	if (!out)
		return NULL;
	ssize_t n =
		fp_segment_build(seg, (uint8_t *)PyBytes_AS_STRING(out), cap);
	if (n < 0) {
		Py_DECREF(out);
		PyErr_Format(PyExc_ValueError, "cannot build the segment: %s",
			     n == -EMSGSIZE
				     ? "payload too large for one IP packet"
				     : "options longer than 40 bytes");
		return NULL;
	}
	if ((size_t)n != cap && _PyBytes_Resize(&out, n) < 0)
		return NULL; /* out was freed and set to NULL */
	return out;
}

static PyObject *segment_bytes(SegmentObject *self,
			       PyObject *Py_UNUSED(ignored))
{
	return segment_to_bytes(self);
}

static PyObject *segment_parse(PyObject *cls, PyObject *data)
{
	Py_buffer view;
	if (PyUnicode_Check(data)) {
		PyErr_SetString(PyExc_TypeError,
				"Segment.parse() takes bytes, not str");
		return NULL;
	}
	if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	core_state *st = core_state_of_type((PyTypeObject *)cls);
	struct fp_segment seg;
	char why[160];
	PyObject *result = NULL;
	if (fp_segment_parse(&seg, view.buf, (size_t)view.len, why,
			     sizeof(why)) < 0)
		PyErr_Format(st->parse_error,
			     "malformed packet (%zd bytes): %s", view.len, why);
	else
		result = segment_new_from(st, &seg, -1, NULL);
	PyBuffer_Release(&view);
	return result;
}

/* ---- replace, equality, repr ---------------------------------------------- */

static PyObject *segment_fields(SegmentObject *self);

static PyObject *segment_replace(SegmentObject *self, PyObject *args,
				 PyObject *kwargs)
{
	if (PyTuple_GET_SIZE(args)) {
		PyErr_SetString(PyExc_TypeError,
				"replace() takes keyword arguments only");
		return NULL;
	}
	PyObject *fields = segment_fields(self);
	if (!fields)
		return NULL;
	if (kwargs && PyDict_Update(fields, kwargs) < 0) {
		Py_DECREF(fields);
		return NULL;
	}
	PyObject *empty = PyTuple_New(0);
	PyObject *copy = empty ? segment_new(Py_TYPE(self), empty, fields)
			       : NULL;
	Py_XDECREF(empty);
	Py_DECREF(fields);
	return copy;
}

/* What makes two segments equal: everything that goes on the wire but the
 * TTL and the checksum. */
static int segment_same(const SegmentObject *x, const SegmentObject *y)
{
	if (x->family != y->family || memcmp(x->src, y->src, 16) ||
	    memcmp(x->dst, y->dst, 16) || x->sport != y->sport ||
	    x->dport != y->dport || x->seq != y->seq || x->ack != y->ack ||
	    x->flags != y->flags || x->window != y->window ||
	    x->urg != y->urg || Py_SIZE(x) != Py_SIZE(y))
		return 0;
	for (Py_ssize_t i = 0; i < Py_SIZE(x); i++)
		if (memcmp(&x->options[i], &y->options[i],
			   sizeof(struct fp_option)))
			return 0;
	return PyObject_RichCompareBool(x->payload, y->payload, Py_EQ);
}

static PyObject *segment_richcompare(PyObject *a, PyObject *b, int op)
{
	if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b))
		Py_RETURN_NOTIMPLEMENTED;
	int same = segment_same((SegmentObject *)a, (SegmentObject *)b);
	if (same < 0)
		return NULL;
	return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t segment_hash(SegmentObject *self)
{
	const SegmentObject *s = self;
	Py_uhash_t h = PyObject_Hash(self->payload);
	uint32_t fields[] = { s->family, s->sport, s->dport, s->seq,
			      s->ack,	 s->flags, s->window };
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		h = h * 1000003u ^ fields[i];
	for (int i = 0; i < 16; i++)
		h = h * 31u ^ s->src[i] ^ (Py_uhash_t)s->dst[i] << 8;
	return h == (Py_uhash_t)-1 ? -2 : (Py_hash_t)h;
}

static void format_endpoint(char *out, size_t len, int family,
			    const uint8_t *addr, int port)
{
	char text[INET6_ADDRSTRLEN];
	if (!core_address_text(family, addr, text))
		strcpy(text, "?");
	snprintf(out, len, family == 6 ? "[%s]:%d" : "%s:%d", text, port);
}

static PyObject *segment_repr(SegmentObject *self)
{
	const SegmentObject *s = self;
	char src[64], dst[64], flags[9];
	format_endpoint(src, sizeof(src),
			self->unaddressed & SRC_MISSING ? 0 : s->family, s->src,
			s->sport);
	format_endpoint(dst, sizeof(dst),
			self->unaddressed & DST_MISSING ? 0 : s->family, s->dst,
			s->dport);
	fp_flags_format(s->flags, flags);
	return PyUnicode_FromFormat(
		"<Segment %s > %s [%s] seq=%lu ack=%lu win=%u len=%zu>", src,
		dst, flags, (unsigned long)s->seq, (unsigned long)s->ack,
		(unsigned)s->window, (size_t)PyBytes_GET_SIZE(s->payload));
}

/* ---- attributes ----------------------------------------------------------- */

static PyObject *get_src(SegmentObject *self, void *c)
{
	if (self->unaddressed & SRC_MISSING)
		Py_RETURN_NONE;
	return core_format_address(self->family, self->src);
}
static PyObject *get_dst(SegmentObject *self, void *c)
{
	if (self->unaddressed & DST_MISSING)
		Py_RETURN_NONE;
	return core_format_address(self->family, self->dst);
}
static PyObject *get_sport(SegmentObject *self, void *c)
{
	return PyLong_FromLong(self->sport);
}
static PyObject *get_dport(SegmentObject *self, void *c)
{
	return PyLong_FromLong(self->dport);
}
static PyObject *get_seq(SegmentObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->seq);
}
static PyObject *get_ack(SegmentObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->ack);
}
static PyObject *get_window(SegmentObject *self, void *c)
{
	return PyLong_FromLong(self->window);
}
static PyObject *get_urg(SegmentObject *self, void *c)
{
	return PyLong_FromLong(self->urg);
}
static PyObject *get_ttl(SegmentObject *self, void *c)
{
	return PyLong_FromLong(self->ttl);
}
static PyObject *get_payload(SegmentObject *self, void *c)
{
	return Py_NewRef(self->payload);
}
static PyObject *get_direction(SegmentObject *self, void *c)
{
	return Py_NewRef(self->direction);
}
static PyObject *get_options(SegmentObject *self, void *c)
{
	return options_to_tuple(self->options, Py_SIZE(self));
}
static PyObject *get_family(SegmentObject *self, void *c)
{
	return PyLong_FromLong(self->family);
}

static PyObject *get_flags(SegmentObject *self, void *c)
{
	char text[9];
	fp_flags_format(self->flags, text);
	return PyUnicode_FromString(text);
}

static PyObject *get_seg_len(SegmentObject *self, void *c)
{
	/* fp_segment_seg_len's sum, without a whole struct to call it on */
	return PyLong_FromSize_t((size_t)PyBytes_GET_SIZE(self->payload) +
				 !!(self->flags & FP_SYN) +
				 !!(self->flags & FP_FIN));
}

static PyObject *get_ts(SegmentObject *self, void *c)
{
	if (isnan(self->ts))
		Py_RETURN_NONE;
	return PyFloat_FromDouble(self->ts);
}

static PyObject *get_checksum(SegmentObject *self, void *c)
{
	if (!self->has_checksum)
		Py_RETURN_NONE;
	return PyLong_FromLong(self->checksum);
}

static PyObject *get_checksum_ok(SegmentObject *self, void *c)
{
	if (!self->has_checksum || self->force_checksum)
		Py_RETURN_NONE;
	return PyBool_FromLong(self->tcp_checksum_ok && self->ip_checksum_ok);
}

static PyGetSetDef segment_getset[] = {
	{ "src", (getter)get_src, NULL, "source address as text, or None",
	  NULL },
	{ "dst", (getter)get_dst, NULL, "destination address as text, or None",
	  NULL },
	{ "sport", (getter)get_sport, NULL, "source port", NULL },
	{ "dport", (getter)get_dport, NULL, "destination port", NULL },
	{ "seq", (getter)get_seq, NULL, "sequence number", NULL },
	{ "ack", (getter)get_ack, NULL, "acknowledgment number", NULL },
	{ "flags", (getter)get_flags, NULL,
	  "flags as letters of \"FSRPAUEC\", in that order", NULL },
	{ "window", (getter)get_window, NULL, "window field (unscaled)", NULL },
	{ "urg", (getter)get_urg, NULL, "urgent pointer", NULL },
	{ "ttl", (getter)get_ttl, NULL, "IPv4 TTL or IPv6 hop limit", NULL },
	{ "options", (getter)get_options, NULL,
	  "TCP options as a tuple of tuples", NULL },
	{ "payload", (getter)get_payload, NULL, "payload bytes", NULL },
	{ "seg_len", (getter)get_seg_len, NULL,
	  "sequence space used: len(payload) + SYN + FIN", NULL },
	{ "ts", (getter)get_ts, NULL,
	  "CLOCK_MONOTONIC seconds when sent or captured, or None", NULL },
	{ "direction", (getter)get_direction, NULL,
	  "\"out\" (we sent it), \"in\" (the peer's), or None", NULL },
	{ "checksum", (getter)get_checksum, NULL,
	  "TCP checksum as parsed or forced, else None", NULL },
	{ "checksum_ok", (getter)get_checksum_ok, NULL,
	  "whether a parsed segment's checksums verified; None if not parsed",
	  NULL },
	{ "family", (getter)get_family, NULL, "4 or 6 (0 without addresses)",
	  NULL },
	{ NULL },
};

static PyObject *segment_fields(SegmentObject *self)
{
	PyObject *d = PyDict_New();
	static const char *names[] = { "src", "dst",	 "sport",   "dport",
				       "seq", "ack",	 "flags",   "window",
				       "urg", "options", "payload", "ttl" };
	for (size_t i = 0; d && i < sizeof(names) / sizeof(names[0]); i++) {
		PyObject *v =
			PyObject_GetAttrString((PyObject *)self, names[i]);
		if (!v || PyDict_SetItemString(d, names[i], v) < 0) {
			Py_XDECREF(v);
			Py_CLEAR(d);
			break;
		}
		Py_DECREF(v);
	}
	if (d && self->force_checksum) {
		PyObject *v = PyLong_FromLong(self->checksum);
		if (!v || PyDict_SetItemString(d, "checksum", v) < 0)
			Py_CLEAR(d);
		Py_XDECREF(v);
	}
	return d;
}

static PyMethodDef segment_methods[] = {
	{ "__bytes__", (PyCFunction)segment_bytes, METH_NOARGS,
	  "IP + TCP wire bytes with correct checksums (unless one was forced)" },
	{ "parse", (PyCFunction)segment_parse, METH_O | METH_CLASS,
	  "parse(data) -> Segment from an IPv4 or IPv6 packet; ParseError if malformed" },
	{ "replace", (PyCFunction)(void (*)(void))segment_replace,
	  METH_VARARGS | METH_KEYWORDS,
	  "replace(**fields) -> a copy with some fields changed (not on the wire: ts is None)" },
	{ NULL },
};

static PyType_Slot segment_slots[] = {
	{ Py_tp_doc,
	  "Segment(src=None, dst=None, sport=0, dport=0, seq=0, ack=0, flags=\"\", "
	  "window=65535, urg=0, options=(), payload=b\"\", *, checksum=None, ttl=64)\n\n"
	  "A TCP segment with its IP addresses. checksum forces the TCP checksum sent." },
	{ Py_tp_new, segment_new },
	{ Py_tp_dealloc, segment_dealloc },
	{ Py_tp_traverse, segment_traverse },
	{ Py_tp_repr, segment_repr },
	{ Py_tp_hash, segment_hash },
	{ Py_tp_richcompare, segment_richcompare },
	{ Py_tp_getset, segment_getset },
	{ Py_tp_methods, segment_methods },
	{ 0, NULL },
};

PyType_Spec segment_spec = {
	.name = "finprobe.Segment",
	.basicsize = sizeof(SegmentObject),
	.itemsize = sizeof(struct fp_option),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
		 Py_TPFLAGS_IMMUTABLETYPE,
	.slots = segment_slots,
};
