// Answers every request with a greeting; the port comes from $PORT (default 8080).
const http = require("node:http");

const port = Number(process.env.PORT || 8080);
http
  .createServer((_request, response) => {
    response.setHeader("content-type", "text/plain");
    response.end(`Hello from hello-node on Node.js ${process.version}\n`);
  })
  .listen(port, () => console.log(`hello-node listening on ${port}`));
