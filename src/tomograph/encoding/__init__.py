"""Wire formats: each module encodes spans to one format and decodes it back.

The modules here are pure functions: no I/O, no configuration, no threads. Reporting encodes
with them; the collector decodes with them and never imports reporting.

====================  =======================================================
``zipkin_json``       Zipkin v2 JSON (``/api/v2/spans``, the default)
``zipkin_proto``      Zipkin v2 proto3 ``ListOfSpans``
``zipkin_v1_json``    Zipkin v1 JSON (``/api/v1/spans``; zipkin-js's default)
``zipkin_v1_thrift``  Zipkin v1 Thrift (``/api/v1/spans``, Scribe)
``zipkin_v1``         the v1 model and its conversion to v2, as Zipkin converts
``otlp``              OTLP/HTTP protobuf and JSON (needs ``opentelemetry-proto``)
``normalize``         the one normalization of decoded spans (Zipkin's rules)
``errors``            :class:`~tomograph.encoding.errors.DecodeError`, raised by every decoder
====================  =======================================================
"""

__all__: list[str] = []
