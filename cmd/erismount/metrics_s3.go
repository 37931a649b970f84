package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"erismount/cache/s3"
)

var (
	descS3Requests = prometheus.NewDesc("erismount_s3_requests_total", "Requests sent to the S3 service (retries included), by HTTP method.", []string{"store", "method"}, nil)
	descS3Bytes    = prometheus.NewDesc("erismount_s3_bytes_total", "Body bytes exchanged with the S3 service, by direction.", []string{"store", "direction"}, nil)
	descS3Blocks   = prometheus.NewDesc("erismount_s3_blocks_total", "Block operations on the bucket, by outcome.", []string{"store", "outcome"}, nil)
)

// collectS3 reports a bucket store's counters: what an object store bills
// for is requests, so they are counted by method.
func collectS3(st *s3.Store, counter func(*prometheus.Desc, int64, ...string)) {
	s, u := st.Stats(), st.URL()
	counter(descS3Requests, s.GETs, u, "GET")
	counter(descS3Requests, s.PUTs, u, "PUT")
	counter(descS3Requests, s.HEADs, u, "HEAD")
	counter(descS3Requests, s.Other, u, "other")
	counter(descS3Bytes, s.BytesSent, u, "sent")
	counter(descS3Bytes, s.BytesReceived, u, "received")
	counter(descS3Blocks, s.Blocks, u, "got")
	counter(descS3Blocks, s.NotFound, u, "not_found")
	counter(descS3Blocks, s.Corrupt, u, "corrupt")
	counter(descS3Blocks, s.Uploaded, u, "uploaded")
	counter(descS3Blocks, s.Present, u, "already_there")
	counter(descS3Blocks, s.Errors, u, "error")
}
