// Package serve is the protocol-independent core of `mtlrank serve`: a
// model repository laid out as Triton's (DIR/<name>/<version>/ holding a
// checkpoint and the workflow.json that encoded its data), models that
// check and encode the input tensors of an inference request (raw values
// through the workflow, or values already encoded) and score them through
// a dynamic batcher, and the server's Prometheus metrics.
//
// The front ends are serve/httpapi (the Open Inference Protocol's
// HTTP/REST endpoints) and serve/grpcapi (its gRPC service, generated in
// serve/inferencepb); serve/server runs both.
package serve
