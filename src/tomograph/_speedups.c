/* The span hot path in C: make_span, Span.__enter__, Span.__exit__ and Span.finish().
 *
 * Optional: tomograph/span.py keeps the same functions in Python, uses them when this module
 * is missing or TOMOGRAPH_NO_EXTENSIONS is set, and hands them to setup() so that anything
 * this file does not handle itself (a subclass of Span, a kind given as text, tags that are
 * not a plain dict, a timestamp, arguments that do not fit) goes to them: the Python code
 * stays the one definition of the behaviour, and this file a shortcut through its common
 * cases. Span stays the Python class it is: its fields are the member slots of that class,
 * read and written here at the offsets Python itself uses for them.
 *
 * Per span this saves the interpreter frames of make_span, __enter__ and __exit__: an
 * unsampled span costs about half the instructions of the Python version.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* The fields of Span, in the order of the names below. */
enum {
    F_CLASSIC,
    F_TOKEN,
    F_TRACER,
    F_DEBUG,
    F_END_NS,
    F_EPOCH_OFFSET_NS,
    F_ERROR,
    F_EXTRA,
    F_KIND,
    F_LOCAL_ENDPOINT,
    F_NAME,
    F_NOTES_RAW,
    F_PARENT_ID,
    F_REMOTE_ENDPOINT,
    F_SAMPLED,
    F_SHARED,
    F_SPAN_ID,
    F_START_NS,
    F_TAGS,
    F_TRACE_ID,
    SPAN_FIELDS
};

static const char *span_field_names[SPAN_FIELDS] = {
    "_classic", "_token",  "_tracer",    "debug",     "end_ns",
    "epoch_offset_ns", "error", "extra", "kind",      "local_endpoint",
    "name",     "notes_raw", "parent_id", "remote_endpoint", "sampled",
    "shared",   "span_id", "start_ns",   "tags",      "trace_id",
};

/* The fields of Tracer make_span reads. */
enum {
    T_LOCAL_ENDPOINT,
    T_TRACE_ID_BITS,
    T_ROOT_DECISION,
    T_SAMPLER,
    T_ROOT_FOLLOWS_PARENT,
    T_JOIN_SHARED_SPANS,
    T_REPORT,
    TRACER_FIELDS
};

static const char *tracer_field_names[TRACER_FIELDS] = {
    "local_endpoint",      "trace_id_bits",     "root_decision", "_sampler",
    "root_follows_parent", "join_shared_spans", "_report",
};

/* Enough for the fields of Span, of Tracer and of the clock's anchor. */
#define MAX_FIELDS ((int)SPAN_FIELDS)

typedef struct {
    PyTypeObject *type; /* NULL until setup */
    Py_ssize_t offset[MAX_FIELDS];
    PyObject *name[MAX_FIELDS];
} Layout;

_Static_assert(TRACER_FIELDS <= MAX_FIELDS, "Layout too small");

static Layout span_layout;
static Layout tracer_layout;

/* What setup() is given (strong references, kept for the life of the process). */
static PyObject *current_var;   /* CURRENT_SPAN */
static PyObject *root_extra_var; /* ROOT_EXTRA */
static PyObject *current_default; /* the CURRENT sentinel */
static PyObject *span_kind_type;
static PyObject *server_kind;   /* SpanKind.SERVER */
static PyObject *monotonic_ns;
static PyObject *getrandbits;
static PyObject *new_trace_id;
static PyObject *new_span_id;
static PyObject *anchor;
static PyObject *no_tags;
static PyObject *py_make_span;
static PyObject *py_enter;
static PyObject *py_exit;
static PyObject *py_finish;
static PyObject *py_tag;
static PyObject *py_annotate;

static PyObject *int_zero, *int_untimed, *int_64, *mask_64;
static PyObject *str_stop, *str_record_exception, *str_next_check_ns, *str_offset_ns,
    *str_offset_at, *str_trace_id, *str_span_id, *str_parent_id, *str_sampled, *str_debug,
    *str_extra, *str_append;

/* -- fields ------------------------------------------------------------------------------ */

#define FIELD(obj, layout, i) (*(PyObject **)((char *)(obj) + (layout).offset[i]))

/* A new reference to field i, or NULL with the AttributeError Python raises for it. */
static inline PyObject *
get_field(PyObject *obj, Layout *layout, int i)
{
    PyObject *value = FIELD(obj, *layout, i);
    if (value != NULL) {
        return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, layout->name[i]);
}

/* A field of a tracer: at its offset for a Tracer, by attribute for anything else. */
static inline PyObject *
tracer_field(PyObject *tracer, int i)
{
    if (Py_TYPE(tracer) == tracer_layout.type) {
        return get_field(tracer, &tracer_layout, i);
    }
    return PyObject_GetAttr(tracer, tracer_layout.name[i]);
}

/* Set a field of a span: takes a new reference to value (and releases it on NULL). */
static inline int
set_field(PyObject *span, int i, PyObject *value)
{
    if (value == NULL) {
        return -1;
    }
    PyObject **slot = &FIELD(span, span_layout, i);
    PyObject *old = *slot;
    *slot = value;
    Py_XDECREF(old);
    return 0;
}

static inline int
set_field_ref(PyObject *span, int i, PyObject *value)
{
    return set_field(span, i, Py_NewRef(value));
}

static int
read_layout(PyTypeObject *type, const char **names, int count, Layout *layout)
{
    for (int i = 0; i < count; i++) {
        PyObject *name = PyUnicode_InternFromString(names[i]);
        if (name == NULL) {
            return -1;
        }
        layout->name[i] = name;
        PyObject *descr = PyDict_GetItemWithError(type->tp_dict, name);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            }
            return -1;
        }
        if (!PyType_IsSubtype(type, ((PyMemberDescrObject *)descr)->d_common.d_type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is another class's slot", type->tp_name,
                         names[i]);
            return -1;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", type->tp_name,
                         names[i]);
            return -1;
        }
        layout->offset[i] = member->offset;
    }
    layout->type = (PyTypeObject *)Py_NewRef((PyObject *)type);
    return 0;
}

/* -- make_span --------------------------------------------------------------------------- */

static inline PyObject *
call0(PyObject *callable)
{
    return PyObject_Vectorcall(callable, NULL, 0, NULL);
}

static inline PyObject *
call1(PyObject *callable, PyObject *arg)
{
    PyObject *args[2] = {NULL, arg};
    return PyObject_Vectorcall(callable, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *
call2(PyObject *callable, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {NULL, a, b};
    return PyObject_Vectorcall(callable, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* ``random_call() or fallback(arg)``: a random id, never zero. */
static PyObject *
random_id(PyObject *bits, PyObject *fallback, PyObject *fallback_arg)
{
    PyObject *id = call1(getrandbits, bits);
    if (id == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(id);
    if (truth > 0) {
        return id;
    }
    Py_DECREF(id);
    if (truth < 0) {
        return NULL;
    }
    return fallback_arg ? call1(fallback, fallback_arg) : call0(fallback);
}

/* The fields of the clock's anchor (an EpochAnchor) the span reads. */
enum { A_NEXT_CHECK_NS, A_OFFSET_NS, ANCHOR_FIELDS };
static const char *anchor_field_names[ANCHOR_FIELDS] = {"next_check_ns", "offset_ns"};
static Layout anchor_layout;

static inline PyObject *
anchor_field(int i)
{
    if (Py_TYPE(anchor) == anchor_layout.type) {
        return get_field(anchor, &anchor_layout, i);
    }
    return PyObject_GetAttr(anchor, i == A_OFFSET_NS ? str_offset_ns : str_next_check_ns);
}

/* ``anchor.offset_ns if start < anchor.next_check_ns else anchor.offset_at(start)`` */
static PyObject *
epoch_offset(PyObject *start)
{
    PyObject *next_check = anchor_field(A_NEXT_CHECK_NS);
    if (next_check == NULL) {
        return NULL;
    }
    int before, overflow_start = 1, overflow_next = 1;
    long long start_ns = 0, next_ns = 0;
    if (PyLong_CheckExact(start) && PyLong_CheckExact(next_check)) {
        start_ns = PyLong_AsLongLongAndOverflow(start, &overflow_start);
        next_ns = PyLong_AsLongLongAndOverflow(next_check, &overflow_next);
    }
    if (overflow_start || overflow_next) {
        before = PyObject_RichCompareBool(start, next_check, Py_LT);
    }
    else {
        before = start_ns < next_ns;
    }
    Py_DECREF(next_check);
    if (before < 0) {
        return NULL;
    }
    if (before) {
        return anchor_field(A_OFFSET_NS);
    }
    return PyObject_CallMethodOneArg(anchor, str_offset_at, start);
}

/* The fields of a new span that starts a trace. */
static int
start_trace(PyObject *span, PyObject *tracer, PyObject *start, PyObject **sampled_out)
{
    PyObject *bits = tracer_field(tracer, T_TRACE_ID_BITS);
    if (bits == NULL) {
        return -1;
    }
    PyObject *trace_id = random_id(bits, new_trace_id, bits);
    Py_DECREF(bits);
    if (trace_id == NULL) {
        return -1;
    }
    set_field(span, F_TRACE_ID, trace_id);
    set_field_ref(span, F_PARENT_ID, Py_None);
    /* The low half of a fresh random trace id is itself random: one draw, not two. */
    PyObject *low = PyNumber_And(trace_id, mask_64);
    if (low == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(low);
    if (truth <= 0) {
        Py_DECREF(low);
        low = truth < 0 ? NULL : call0(new_span_id);
    }
    if (set_field(span, F_SPAN_ID, low) < 0) {
        return -1;
    }
    PyObject *sampled = tracer_field(tracer, T_ROOT_DECISION);
    if (sampled == NULL) {
        return -1;
    }
    if (sampled == Py_None) {
        Py_DECREF(sampled);
        PyObject *sampler = tracer_field(tracer, T_SAMPLER);
        if (sampler == NULL) {
            return -1;
        }
        sampled = call2(sampler, trace_id, Py_None);
        Py_DECREF(sampler);
        if (sampled == NULL) {
            return -1;
        }
    }
    set_field_ref(span, F_SAMPLED, sampled);
    *sampled_out = sampled;
    set_field_ref(span, F_DEBUG, Py_False);
    set_field_ref(span, F_SHARED, Py_False);
    PyObject *extra;
    if (PyContextVar_Get(root_extra_var, NULL, &extra) < 0 || set_field(span, F_EXTRA, extra) < 0) {
        return -1;
    }
    return set_field(span, F_EPOCH_OFFSET_NS, epoch_offset(start));
}

/* The fields of a new span whose parent is a Span of this process. */
static int
continue_local(PyObject *span, PyObject *parent, PyObject **sampled_out)
{
    if (set_field(span, F_TRACE_ID, get_field(parent, &span_layout, F_TRACE_ID)) < 0 ||
        set_field(span, F_PARENT_ID, get_field(parent, &span_layout, F_SPAN_ID)) < 0 ||
        set_field(span, F_SPAN_ID, random_id(int_64, new_span_id, NULL)) < 0) {
        return -1;
    }
    PyObject *sampled = get_field(parent, &span_layout, F_SAMPLED);
    if (set_field(span, F_SAMPLED, sampled) < 0) {
        return -1;
    }
    *sampled_out = Py_NewRef(sampled);
    if (set_field(span, F_DEBUG, get_field(parent, &span_layout, F_DEBUG)) < 0) {
        return -1;
    }
    set_field_ref(span, F_SHARED, Py_False);
    if (set_field(span, F_EXTRA, get_field(parent, &span_layout, F_EXTRA)) < 0) {
        return -1;
    }
    return set_field(span, F_EPOCH_OFFSET_NS, get_field(parent, &span_layout, F_EPOCH_OFFSET_NS));
}

/* The fields of a new span continuing a remote context (or anything else given as parent). */
static int
continue_remote(PyObject *span, PyObject *tracer, PyObject *remote, PyObject *start,
                PyObject **sampled_out)
{
    if (set_field(span, F_EPOCH_OFFSET_NS, epoch_offset(start)) < 0 ||
        set_field(span, F_TRACE_ID, PyObject_GetAttr(remote, str_trace_id)) < 0) {
        return -1;
    }
    PyObject *debug = PyObject_GetAttr(remote, str_debug);
    /* Our own reference: remote.extra runs Python code that may replace the span's slot. */
    Py_XINCREF(debug);
    if (set_field(span, F_DEBUG, debug) < 0 ||
        set_field(span, F_EXTRA, PyObject_GetAttr(remote, str_extra)) < 0) {
        Py_XDECREF(debug);
        return -1;
    }
    int truth = PyObject_IsTrue(debug);
    Py_DECREF(debug);
    PyObject *sampled = NULL;
    if (truth < 0) {
        return -1;
    }
    if (truth) {
        sampled = Py_NewRef(Py_True);
    }
    else {
        PyObject *remote_sampled = PyObject_GetAttr(remote, str_sampled);
        if (remote_sampled == NULL) {
            return -1;
        }
        int follow = 0;
        if (remote_sampled != Py_None) {
            PyObject *follows = tracer_field(tracer, T_ROOT_FOLLOWS_PARENT);
            follow = follows == NULL ? -1 : PyObject_IsTrue(follows);
            Py_XDECREF(follows);
        }
        if (follow < 0) {
            Py_DECREF(remote_sampled);
            return -1;
        }
        if (follow) {
            sampled = remote_sampled; /* what a parent-based sampler would answer */
        }
        else {
            Py_DECREF(remote_sampled);
            PyObject *sampler = tracer_field(tracer, T_SAMPLER);
            if (sampler == NULL) {
                return -1;
            }
            PyObject *trace_id = PyObject_GetAttr(remote, str_trace_id);
            if (trace_id != NULL) {
                sampled = call2(sampler, trace_id, remote);
            }
            Py_DECREF(sampler);
            Py_XDECREF(trace_id);
            if (sampled == NULL) {
                return -1;
            }
        }
    }
    set_field_ref(span, F_SAMPLED, sampled);
    *sampled_out = sampled;
    PyObject *join = tracer_field(tracer, T_JOIN_SHARED_SPANS);
    if (join == NULL) {
        return -1;
    }
    truth = PyObject_IsTrue(join);
    Py_DECREF(join);
    if (truth < 0) {
        return -1;
    }
    if (truth && FIELD(span, span_layout, F_KIND) == server_kind) {
        /* Zipkin's classic RPC model: the server reports under the client's span id. */
        if (set_field(span, F_SPAN_ID, PyObject_GetAttr(remote, str_span_id)) < 0 ||
            set_field(span, F_PARENT_ID, PyObject_GetAttr(remote, str_parent_id)) < 0) {
            return -1;
        }
        return set_field_ref(span, F_SHARED, Py_True);
    }
    if (set_field(span, F_SPAN_ID, random_id(int_64, new_span_id, NULL)) < 0 ||
        set_field(span, F_PARENT_ID, PyObject_GetAttr(remote, str_span_id)) < 0) {
        return -1;
    }
    return set_field_ref(span, F_SHARED, Py_False);
}

/* make_span for the arguments the fast path takes; the Python make_span for the rest. */
static PyObject *
make_span_from(PyObject *tracer, PyObject *name, PyObject *kind, PyObject *tags, PyObject *parent,
               PyObject *local, PyObject *remote)
{
    PyTypeObject *type = span_layout.type;
    PyObject *span = type->tp_alloc(type, 0);
    if (span == NULL) {
        return NULL;
    }
    PyObject *start = NULL, *sampled = NULL, *parent_ref = NULL;
    set_field_ref(span, F_TRACER, tracer);
    set_field_ref(span, F_NAME, name);
    set_field_ref(span, F_KIND, kind);
    int truth = PyObject_IsTrue(local);
    if (truth < 0) {
        goto error;
    }
    if (truth) {
        set_field_ref(span, F_LOCAL_ENDPOINT, local);
    }
    else if (set_field(span, F_LOCAL_ENDPOINT, tracer_field(tracer, T_LOCAL_ENDPOINT)) < 0) {
        goto error;
    }
    set_field_ref(span, F_REMOTE_ENDPOINT, remote);
    set_field_ref(span, F_END_NS, int_zero);
    set_field_ref(span, F_ERROR, Py_False);
    set_field_ref(span, F_CLASSIC, Py_False);
    set_field_ref(span, F_TOKEN, Py_None);
    start = call0(monotonic_ns);
    if (start == NULL) {
        goto error;
    }
    if (parent == current_default) {
        if (PyContextVar_Get(current_var, NULL, &parent_ref) < 0) {
            goto error;
        }
        parent = parent_ref;
    }
    int done;
    if (parent == Py_None) {
        done = start_trace(span, tracer, start, &sampled);
    }
    else if (Py_IS_TYPE(parent, span_layout.type)) {
        done = continue_local(span, parent, &sampled);
    }
    else {
        done = continue_remote(span, tracer, parent, start, &sampled);
    }
    if (done < 0) {
        goto error;
    }
    truth = PyObject_IsTrue(sampled);
    if (truth < 0) {
        goto error;
    }
    int has_tags = tags != Py_None && PyDict_GET_SIZE(tags) != 0;
    if (truth) {
        if (set_field(span, F_TAGS, has_tags ? PyDict_Copy(tags) : PyDict_New()) < 0 ||
            set_field(span, F_NOTES_RAW, PyList_New(0)) < 0) {
            goto error;
        }
    }
    else if (set_field(span, F_TAGS, has_tags ? PyDictProxy_New(tags) : Py_NewRef(no_tags)) < 0) {
        goto error;
    }
    set_field(span, F_START_NS, start);
    Py_XDECREF(sampled);
    Py_XDECREF(parent_ref);
    return span;

error:
    Py_XDECREF(start);
    Py_XDECREF(sampled);
    Py_XDECREF(parent_ref);
    Py_DECREF(span);
    return NULL;
}

static PyObject *make_span_keywords[6];

/* Parses make_span's arguments after the tracer; NULL (without an error) sends the call to the
 * Python make_span: a keyword it does not know, a missing name, too many arguments, a kind
 * given as text, tags that are not a plain dict. */
static PyObject *
make_span_call(PyObject *tracer, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *values[6] = {NULL, Py_None, Py_None, current_default, Py_None, Py_None};
    if (nargs > 6) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        values[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t count = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < count; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int found = -1;
            for (int i = 0; i < 6; i++) {
                if (key == make_span_keywords[i]) {
                    found = i;
                    break;
                }
            }
            if (found < nargs) { /* unknown (-1), or given twice */
                return NULL;
            }
            values[found] = args[nargs + k];
        }
    }
    PyObject *kind = values[1], *tags = values[2];
    if (values[0] == NULL || (kind != Py_None && Py_TYPE(kind) != (PyTypeObject *)span_kind_type) ||
        (tags != Py_None && !PyDict_CheckExact(tags))) {
        return NULL;
    }
    return make_span_from(tracer, values[0], kind, tags, values[3], values[4], values[5]);
}

/* Calls the Python version of a method with self in front of the arguments. */
static PyObject *
call_python(PyObject *function, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[9];
    PyObject **all = total < 8 ? small : PyMem_New(PyObject *, total + 1);
    if (all == NULL) {
        return PyErr_NoMemory();
    }
    all[0] = self;
    for (Py_ssize_t i = 0; i < total; i++) {
        all[i + 1] = args[i];
    }
    PyObject *result = PyObject_Vectorcall(function, all, nargs + 1, kwnames);
    if (all != small) {
        PyMem_Free(all);
    }
    return result;
}

/* make_span(tracer, name, ...) */
static PyObject *
make_span_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs >= 1) {
        PyObject *span = make_span_call(args[0], args + 1, nargs - 1, kwnames);
        if (span != NULL || PyErr_Occurred()) {
            return span;
        }
    }
    return PyObject_Vectorcall(py_make_span, args, nargs, kwnames);
}

/* Tracer.span: make_span with the tracer as self. */
static PyObject *
make_span_method(PyObject *tracer, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *span = make_span_call(tracer, args, nargs, kwnames);
    if (span != NULL || PyErr_Occurred()) {
        return span;
    }
    return call_python(py_make_span, tracer, args, nargs, kwnames);
}

/* -- enter, exit, finish ----------------------------------------------------------------- */

static PyObject *
span_enter(PyObject *self, PyObject *unused)
{
    if (!Py_IS_TYPE(self, span_layout.type)) {
        return call1(py_enter, self);
    }
    PyObject *token = PyContextVar_Set(current_var, self);
    if (token == NULL) {
        return NULL;
    }
    set_field(self, F_TOKEN, token);
    return Py_NewRef(self);
}

/* finish() without a timestamp, once the span is known to be unfinished. */
static int
end_span(PyObject *self)
{
    PyObject *sampled = get_field(self, &span_layout, F_SAMPLED);
    if (sampled == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(sampled);
    Py_DECREF(sampled);
    if (truth <= 0) {
        return truth < 0 ? -1 : set_field_ref(self, F_END_NS, int_untimed);
    }
    PyObject *end_ns = call0(monotonic_ns);
    if (end_ns == NULL) {
        return -1;
    }
    set_field_ref(self, F_END_NS, end_ns);
    PyObject *classic = get_field(self, &span_layout, F_CLASSIC);
    truth = classic == NULL ? -1 : PyObject_IsTrue(classic);
    Py_XDECREF(classic);
    if (truth > 0) {
        PyObject *notes = get_field(self, &span_layout, F_NOTES_RAW);
        PyObject *note = notes == NULL ? NULL : PyTuple_Pack(3, end_ns, str_stop, Py_None);
        PyObject *appended = note == NULL ? NULL : PyObject_CallMethodOneArg(notes, str_append, note);
        Py_XDECREF(notes);
        Py_XDECREF(note);
        truth = appended == NULL ? -1 : 0;
        Py_XDECREF(appended);
    }
    Py_DECREF(end_ns);
    if (truth < 0) {
        return -1;
    }
    PyObject *tracer = get_field(self, &span_layout, F_TRACER);
    if (tracer == NULL) {
        return -1;
    }
    PyObject *report = tracer_field(tracer, T_REPORT);
    Py_DECREF(tracer);
    if (report == NULL) {
        return -1;
    }
    PyObject *reported = call1(report, self);
    Py_DECREF(report);
    if (reported == NULL) {
        return -1;
    }
    Py_DECREF(reported);
    return 0;
}

/* ``if not self.end_ns: end_span(self)`` */
static int
end_unfinished(PyObject *self)
{
    PyObject *end_ns = get_field(self, &span_layout, F_END_NS);
    if (end_ns == NULL) {
        return -1;
    }
    int finished = PyObject_IsTrue(end_ns);
    Py_DECREF(end_ns);
    if (finished) {
        return finished < 0 ? -1 : 0;
    }
    return end_span(self);
}

static PyObject *
span_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs != 3) {
        return call_python(py_exit, self, args, nargs, kwnames);
    }
    PyObject *exc = args[1];
    if (exc != Py_None) {
        PyObject *recorded = PyObject_CallMethodOneArg(self, str_record_exception, exc);
        if (recorded == NULL) {
            return NULL;
        }
        Py_DECREF(recorded);
    }
    PyObject *token = get_field(self, &span_layout, F_TOKEN);
    if (token == NULL) {
        return NULL;
    }
    if (token != Py_None) {
        set_field_ref(self, F_TOKEN, Py_None);
        int reset = PyContextVar_Reset(current_var, token);
        if (reset < 0) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                Py_DECREF(token);
                return NULL;
            }
            PyErr_Clear(); /* entered in another context: see Span.deactivate() */
        }
    }
    Py_DECREF(token);
    if (end_unfinished(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
span_finish(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs > 1 ||
        (nargs == 1 && args[0] != Py_None)) {
        return call_python(py_finish, self, args, nargs, kwnames);
    }
    if (end_unfinished(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ``tag(key, value)``: ``if self.sampled: self.tags[key] = value`` */
static PyObject *
span_tag(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs != 2) {
        return call_python(py_tag, self, args, nargs, kwnames);
    }
    PyObject *sampled = get_field(self, &span_layout, F_SAMPLED);
    if (sampled == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(sampled);
    Py_DECREF(sampled);
    if (truth > 0) {
        PyObject *tags = get_field(self, &span_layout, F_TAGS);
        if (tags == NULL) {
            return NULL;
        }
        truth = PyObject_SetItem(tags, args[0], args[1]);
        Py_DECREF(tags);
    }
    if (truth < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ``annotate(value, duration_us=None)``: a note at the current time, if sampled */
static PyObject *
span_annotate(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!Py_IS_TYPE(self, span_layout.type) || kwnames != NULL || nargs < 1 || nargs > 2) {
        return call_python(py_annotate, self, args, nargs, kwnames);
    }
    PyObject *sampled = get_field(self, &span_layout, F_SAMPLED);
    if (sampled == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(sampled);
    Py_DECREF(sampled);
    if (truth > 0) {
        PyObject *notes = get_field(self, &span_layout, F_NOTES_RAW);
        if (notes == NULL) {
            return NULL;
        }
        PyObject *now = call0(monotonic_ns);
        PyObject *note = now == NULL ? NULL : PyTuple_Pack(3, now, args[0], nargs == 2 ? args[1] : Py_None);
        Py_XDECREF(now);
        PyObject *appended = note == NULL ? NULL : PyObject_CallMethodOneArg(notes, str_append, note);
        Py_XDECREF(note);
        Py_DECREF(notes);
        truth = appended == NULL ? -1 : 0;
        Py_XDECREF(appended);
    }
    if (truth < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The interpreter setup() ran in: the only one the compiled functions serve. */
static PyInterpreterState *setup_interpreter = NULL;

/* -- setup ------------------------------------------------------------------------------- */

/* Each definition's doc starts with a text signature ("name(...)\n--\n\n"), which
 * inspect.signature() and help() read; setup() puts the Python function's docstring after it.
 * tomograph.CURRENT is the one default that is no literal (span.py: why it is a str). */
#define MAKE_SPAN_PARAMETERS \
    "name, kind=None, tags=None, parent=tomograph.CURRENT, local_endpoint=None, " \
    "remote_endpoint=None)\n--\n\n"

static PyMethodDef make_span_method_def = {
    "span", (PyCFunction)(void (*)(void))make_span_method, METH_FASTCALL | METH_KEYWORDS,
    "span($tracer, " MAKE_SPAN_PARAMETERS "Start a span of this tracer: see make_span."};

static PyMethodDef make_span_function_def = {
    "make_span", (PyCFunction)(void (*)(void))make_span_function, METH_FASTCALL | METH_KEYWORDS,
    "make_span(tracer, " MAKE_SPAN_PARAMETERS "Start a span of tracer (see tomograph.span.make_span)."};

static PyMethodDef span_method_defs[] = {
    {"__enter__", (PyCFunction)span_enter, METH_NOARGS,
     "__enter__($self)\n--\n\nMake the span current."},
    {"__exit__", (PyCFunction)(void (*)(void))span_exit, METH_FASTCALL | METH_KEYWORDS,
     "__exit__($self, exc_type, exc, tb)\n--\n\n"
     "Restore the previous current span and finish this one."},
    {"finish", (PyCFunction)(void (*)(void))span_finish, METH_FASTCALL | METH_KEYWORDS,
     "finish($self, timestamp_us=None)\n--\n\n"
     "Stop the clock and hand the span to the tracer's backends (if sampled)."},
    {"tag", (PyCFunction)(void (*)(void))span_tag, METH_FASTCALL | METH_KEYWORDS,
     "tag($self, key, value)\n--\n\nSet a tag."},
    {"annotate", (PyCFunction)(void (*)(void))span_annotate, METH_FASTCALL | METH_KEYWORDS,
     "annotate($self, value, duration_us=None)\n--\n\nAdd a timestamped note."},
};
#define SPAN_METHODS ((int)(sizeof(span_method_defs) / sizeof(span_method_defs[0])))

/* The definitions' docs with the Python functions' docstrings, shown by help() for the compiled
 * ones (kept alive here: the method definitions point into them). */
static PyObject *docs[SPAN_METHODS + 2];

/* The definition's text signature, then the Python function's docstring. */
static void
copy_doc(PyMethodDef *def, PyObject *function, int i)
{
    const char *end = strstr(def->ml_doc, "\n--\n\n");
    Py_ssize_t length = end == NULL ? 0 : end - def->ml_doc + 5;
    PyObject *doc = PyObject_GetAttrString(function, "__doc__");
    PyObject *signature = PyUnicode_FromStringAndSize(def->ml_doc, length);
    PyObject *joined = doc != NULL && signature != NULL && PyUnicode_Check(doc)
                           ? PyUnicode_Concat(signature, doc)
                           : NULL;
    Py_XDECREF(doc);
    Py_XDECREF(signature);
    const char *text = joined == NULL ? NULL : PyUnicode_AsUTF8(joined);
    if (text == NULL) {
        PyErr_Clear(); /* no docstring (python -OO): the definition's own stays */
        Py_XDECREF(joined);
        return;
    }
    Py_XSETREF(docs[i], joined);
    def->ml_doc = text;
}

#define KEEP(target, value) Py_XSETREF(target, Py_NewRef(value))

/* setup(Span, names): prepares the module and returns
 * (make_span, Tracer.span, Span.__enter__, Span.__exit__, Span.finish). */
static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *span_type, *names;
    if (span_layout.type != NULL) {
        /* The globals below belong to the first Span class and interpreter set up (the methods
         * installed there use them): a re-imported span module or a subinterpreter runs pure
         * Python instead (span.py catches this). */
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is set up already");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!:setup", &PyType_Type, &span_type, &PyDict_Type, &names)) {
        return NULL;
    }
    static const char *needed[] = {
        "CURRENT_SPAN", "ROOT_EXTRA", "CURRENT", "SpanKind", "SERVER", "monotonic_ns",
        "getrandbits", "new_trace_id", "new_span_id", "anchor", "no_tags", "make_span",
        "enter", "exit", "finish", "tag", "annotate"};
    PyObject **targets[] = {&current_var, &root_extra_var, &current_default, &span_kind_type,
                            &server_kind, &monotonic_ns, &getrandbits, &new_trace_id,
                            &new_span_id, &anchor, &no_tags, &py_make_span, &py_enter,
                            &py_exit, &py_finish, &py_tag, &py_annotate};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        PyObject *value = PyDict_GetItemString(names, needed[i]);
        if (value == NULL) {
            return PyErr_Format(PyExc_KeyError, "setup() needs %s", needed[i]);
        }
        KEEP(*targets[i], value);
    }
    if (!PyContextVar_CheckExact(current_var) || !PyContextVar_CheckExact(root_extra_var)) {
        PyErr_SetString(PyExc_TypeError, "CURRENT_SPAN and ROOT_EXTRA must be ContextVars");
        return NULL;
    }
    const char *keywords[6] = {"name", "kind", "tags", "parent", "local_endpoint",
                               "remote_endpoint"};
    for (int i = 0; i < 6; i++) {
        if ((make_span_keywords[i] = PyUnicode_InternFromString(keywords[i])) == NULL) {
            return NULL;
        }
    }
    if ((int_zero = PyLong_FromLong(0)) == NULL || (int_untimed = PyLong_FromLong(-1)) == NULL ||
        (int_64 = PyLong_FromLong(64)) == NULL ||
        (mask_64 = PyLong_FromUnsignedLongLong(0xFFFFFFFFFFFFFFFFULL)) == NULL ||
        (str_stop = PyUnicode_InternFromString("stop")) == NULL ||
        (str_record_exception = PyUnicode_InternFromString("record_exception")) == NULL ||
        (str_next_check_ns = PyUnicode_InternFromString("next_check_ns")) == NULL ||
        (str_offset_ns = PyUnicode_InternFromString("offset_ns")) == NULL ||
        (str_offset_at = PyUnicode_InternFromString("offset_at")) == NULL ||
        (str_trace_id = PyUnicode_InternFromString("trace_id")) == NULL ||
        (str_span_id = PyUnicode_InternFromString("span_id")) == NULL ||
        (str_parent_id = PyUnicode_InternFromString("parent_id")) == NULL ||
        (str_sampled = PyUnicode_InternFromString("sampled")) == NULL ||
        (str_debug = PyUnicode_InternFromString("debug")) == NULL ||
        (str_extra = PyUnicode_InternFromString("extra")) == NULL ||
        (str_append = PyUnicode_InternFromString("append")) == NULL) {
        return NULL;
    }
    for (int i = 0; i < TRACER_FIELDS; i++) {
        /* Read by attribute until use_tracer_layout() gives their offsets. */
        if ((tracer_layout.name[i] = PyUnicode_InternFromString(tracer_field_names[i])) == NULL) {
            return NULL;
        }
    }
    Layout span_fields = {0};
    if (read_layout((PyTypeObject *)span_type, span_field_names, SPAN_FIELDS, &span_fields) < 0) {
        return NULL;
    }
    /* make_span fills exactly these fields: a slot it does not know would stay unset. */
    PyObject *slots = PyObject_GetAttrString(span_type, "__slots__");
    Py_ssize_t count = slots == NULL ? -1 : PyObject_Length(slots);
    Py_XDECREF(slots);
    if (count < 0) {
        return NULL;
    }
    if (count != SPAN_FIELDS || ((PyTypeObject *)span_type)->tp_base != &PyBaseObject_Type) {
        return PyErr_Format(PyExc_TypeError, "%s has slots setup() does not know",
                            ((PyTypeObject *)span_type)->tp_name);
    }
    PyObject *python_methods[SPAN_METHODS] = {py_enter, py_exit, py_finish, py_tag, py_annotate};
    for (int i = 0; i < SPAN_METHODS; i++) {
        copy_doc(&span_method_defs[i], python_methods[i], i);
    }
    copy_doc(&make_span_function_def, py_make_span, SPAN_METHODS);
    copy_doc(&make_span_method_def, py_make_span, SPAN_METHODS + 1);
    PyObject *result = PyTuple_New(2 + SPAN_METHODS);
    if (result == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyCFunction_New(&make_span_function_def, NULL));
    /* Tracer.span binds like a method (tracer.span(...)): a method descriptor of object,
     * since make_span takes any tracer. */
    PyTuple_SET_ITEM(result, 1, PyDescr_NewMethod(&PyBaseObject_Type, &make_span_method_def));
    for (int i = 0; i < SPAN_METHODS; i++) {
        PyTuple_SET_ITEM(result, 2 + i,
                         PyDescr_NewMethod((PyTypeObject *)span_type, &span_method_defs[i]));
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(result); i++) {
        if (PyTuple_GET_ITEM(result, i) == NULL) {
            Py_DECREF(result);
            return NULL;
        }
    }
    Layout anchor_fields = {0};
    if (read_layout(Py_TYPE(anchor), anchor_field_names, ANCHOR_FIELDS, &anchor_fields) < 0) {
        PyErr_Clear(); /* not an EpochAnchor: its fields are read by attribute */
    }
    else {
        anchor_layout = anchor_fields;
    }
    span_layout = span_fields;
    setup_interpreter = PyInterpreterState_Get();
    return result;
}

/* use_tracer_layout(Tracer): read the fields of exactly that class at their offsets. */
static PyObject *
use_tracer_layout(PyObject *module, PyObject *tracer_type)
{
    if (!PyType_Check(tracer_type)) {
        PyErr_SetString(PyExc_TypeError, "use_tracer_layout() takes the Tracer class");
        return NULL;
    }
    if (span_layout.type == NULL || PyInterpreterState_Get() != setup_interpreter) {
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups is not set up here");
        return NULL;
    }
    if (tracer_layout.type != NULL) {
        if (tracer_layout.type == (PyTypeObject *)tracer_type) {
            Py_RETURN_NONE;
        }
        /* make_span reads another Tracer class by attribute: never replace the offsets. */
        PyErr_SetString(PyExc_RuntimeError, "tomograph._speedups uses another Tracer class");
        return NULL;
    }
    Layout fields = {0};
    if (read_layout((PyTypeObject *)tracer_type, tracer_field_names, TRACER_FIELDS, &fields) < 0) {
        return NULL;
    }
    tracer_layout = fields;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Span, names) -> (make_span, Tracer.span, __enter__, __exit__, finish)"},
    {"use_tracer_layout", use_tracer_layout, METH_O,
     "use_tracer_layout(Tracer): read a Tracer's fields at their offsets."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "tomograph._speedups",
    "The span hot path in C (optional; see tomograph.span).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module_def);
}
