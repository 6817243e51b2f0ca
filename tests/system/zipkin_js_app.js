// A client and a server traced by zipkin-js (npm packages zipkin, zipkin-transport-http) across
// one real HTTP call, both reporting to the collector at argv[2] through HttpLogger.
//   node zipkin_js_app.js COLLECTOR_URL [default|v1|v2] [SPANS_PATH]
// "default" leaves HttpLogger's JSON encoder unset (zipkin-js then writes v1 JSON).
// Prints one JSON line: the ids it used and each logger's answer ("success" or the error).
'use strict';
const http = require('http');
const {Tracer, BatchRecorder, ExplicitContext, Instrumentation, jsonEncoder, option} =
  require('zipkin');
const {HttpLogger} = require('zipkin-transport-http');

const [collector, encoding = 'default', path = '/api/v1/spans'] = process.argv.slice(2);

function makeTracer(serviceName) {
  const options = {endpoint: collector + path};
  if (encoding === 'v1') options.jsonEncoder = jsonEncoder.JSON_V1;
  if (encoding === 'v2') options.jsonEncoder = jsonEncoder.JSON_V2;
  const logger = new HttpLogger(options);
  const answer = new Promise((resolve) => {
    logger.on('success', () => resolve('success'));
    logger.on('error', (error) => resolve(String(error)));
  });
  const tracer = new Tracer({
    ctxImpl: new ExplicitContext(),
    recorder: new BatchRecorder({logger}),
    localServiceName: serviceName,
  });
  return {tracer, logger, answer};
}

const frontend = makeTracer('frontend');
const backend = makeTracer('backend');

const server = http.createServer((req, res) => {
  const instrumentation = new Instrumentation.HttpServer({
    tracer: backend.tracer, port: server.address().port,
  });
  const readHeader = (name) => {
    const value = req.headers[name.toLowerCase()];
    return value === undefined ? option.None : new option.Some(value);
  };
  backend.tracer.scoped(() => {
    const id = instrumentation.recordRequest(req.method, req.url, readHeader);
    res.end('ok');
    instrumentation.recordResponse(id, res.statusCode);
  });
});

server.listen(0, '127.0.0.1', () => {
  const url = `http://127.0.0.1:${server.address().port}/items?x=1`;
  const instrumentation = new Instrumentation.HttpClient({
    tracer: frontend.tracer, remoteServiceName: 'backend',
  });
  frontend.tracer.scoped(() => {
    const root = frontend.tracer.createRootId();
    frontend.tracer.setId(root); // the client span becomes its child
    const request = instrumentation.recordRequest({headers: {}}, url, 'GET');
    const id = frontend.tracer.id;
    http.get(url, {headers: request.headers}, (res) => {
      res.resume();
      res.on('end', () => {
        frontend.tracer.scoped(() => instrumentation.recordResponse(id, res.statusCode));
        server.close();
        // each BatchRecorder handed its finished span to its logger: send them now
        frontend.logger.processQueue(frontend.logger.fetchImplementation);
        backend.logger.processQueue(backend.logger.fetchImplementation);
        Promise.all([frontend.answer, backend.answer]).then(([client, serverAnswer]) => {
          console.log(JSON.stringify({
            traceId: id.traceId, spanId: id.spanId, parentId: root.spanId,
            client, server: serverAnswer,
          }));
        });
      });
    });
  });
});
