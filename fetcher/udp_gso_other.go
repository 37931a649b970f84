//go:build !linux

package fetcher

import "net"

func enableGRO(*net.UDPConn) bool { return false }
func gsoOOB(int) []byte           { return nil }
func groSize([]byte) int          { return 0 }

func gsoError(error) bool { return false }

const gsoSupported = false
