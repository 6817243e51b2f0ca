"""System tests: tomograph used as a whole across real processes and servers on 127.0.0.1
(collectors, forked and prefork workers, Celery, zipkin-js, browsers). The tests of one
module or package are in the folder that mirrors its place under ``src/tomograph``."""
