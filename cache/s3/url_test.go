package s3

import (
	"errors"
	"strings"
	"testing"

	"erismount/eris"
)

func TestParseURL(t *testing.T) {
	ok := []struct {
		raw  string
		want Location
		str  string
	}{
		{"s3://blocks", Location{Bucket: "blocks"}, "s3://blocks"},
		{"s3://blocks/", Location{Bucket: "blocks"}, "s3://blocks"},
		{"S3://blocks/eris/v1/", Location{Bucket: "blocks", Prefix: "eris/v1"}, "s3://blocks/eris/v1"},
		{"s3://my.bucket-1/p?endpoint=http://127.0.0.1:9000&region=eu-west-3&path-style=true",
			Location{Bucket: "my.bucket-1", Prefix: "p", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-3", Lookup: LookupPath},
			"s3://my.bucket-1/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000&path-style=true&region=eu-west-3"},
		{"s3://bbb?endpoint=HTTPS://S3.Example.org/&path-style=false&put=conditional",
			Location{Bucket: "bbb", Endpoint: "https://s3.example.org", Lookup: LookupVirtual, Put: PutConditional}, ""},
		{"s3://bkt/a%20b?endpoint=http://[::1]:7070", Location{Bucket: "bkt", Prefix: "a b", Endpoint: "http://[::1]:7070"}, "s3://bkt/a%20b?endpoint=http%3A%2F%2F%5B%3A%3A1%5D%3A7070"},
	}
	for _, tc := range ok {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := ParseURL(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("ParseURL = %+v, want %+v", got, tc.want)
			}
			if tc.str != "" && got.String() != tc.str {
				t.Errorf("String() = %q, want %q", got.String(), tc.str)
			}
			again, err := ParseURL(got.String())
			if err != nil || again != got {
				t.Errorf("ParseURL(String()) = %+v, %v; want %+v", again, err, got)
			}
		})
	}

	bad := []struct{ raw, says string }{
		{"s3://AKIA:secret@bucket/p", "credentials do not go in the URL"},
		{"s3://key@bucket/p", "credentials do not go in the URL"},
		{"http://bucket/p", "want an s3://"},
		{"s3:bucket/p", "two slashes"},
		{"s3:///p", "missing bucket"},
		{"s3://b/p", "bucket \"b\""},
		{"s3://Bad_Bucket!/p", "bucket"},
		{"s3://bucket/a//b", "empty segment"},
		{"s3://bucket/a/../b", "\"..\" segment"},
		{"s3://bucket/a/./b", "\".\" segment"},
		{"s3://bucket/a%00b", "character"},
		{"s3://bucket/p#frag", "fragment"},
		{"s3://bucket/p?endpont=http://x", "unknown parameter \"endpont\""},
		{"s3://bucket/p?region=a&region=b", "given 2 times"},
		{"s3://bucket/p?endpoint=ftp://x", "want http://"},
		{"s3://bucket/p?endpoint=http://u:pw@x", "credentials do not go in the endpoint"},
		{"s3://bucket/p?endpoint=http://x/path", "only scheme, host and port"},
		{"s3://bucket/p?endpoint=http://x:99999", "out of range"},
		{"s3://bucket/p?endpoint=http://x:", "empty port"},
		{"s3://bucket/p?endpoint=", "want http://"},
		{"s3://bucket/p?region=us east", "region"},
		{"s3://bucket/p?path-style=maybe", "path-style"},
		{"s3://bucket/p?put=always", "put"},
		{"s3://bucket/" + strings.Repeat("a", 600), "at most 512"},
	}
	for _, tc := range bad {
		t.Run(tc.raw, func(t *testing.T) {
			_, err := ParseURL(tc.raw)
			if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("ParseURL(%q) = %v; want ErrBadURL saying %q", tc.raw, err, tc.says)
			}
			if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "pw@") {
				t.Errorf("the error quotes the credentials: %v", err)
			}
		})
	}
}

func TestKey(t *testing.T) {
	ref := eris.RefOf(make([]byte, 1024))
	if got := (Location{Bucket: "bbb"}).Key(ref); got != ref.String() {
		t.Errorf("no prefix: %q", got)
	}
	if got := (Location{Bucket: "bbb", Prefix: "x/y"}).Key(ref); got != "x/y/"+ref.String() {
		t.Errorf("prefix x/y: %q", got)
	}
}

// FuzzParseURL: no input panics, what parses prints back to itself, and
// no error quotes the user info of a URL.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"s3://blocks/eris/v1?endpoint=http://127.0.0.1:9000&region=us-east-1&path-style=true",
		"s3://bucket", "s3://a:b@bucket/p", "s3://bucket/p?put=conditional", "s3://bucket/%2e%2e/x",
		"s3://bucket/p?endpoint=http://[::1]:7070", "s3://bucket/p?endpoint=http://[zz]:1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := ParseURL(raw)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("error not ErrBadURL: %v", err)
			}
			if i := strings.Index(raw, "@"); i > 0 && strings.HasPrefix(strings.ToLower(raw), "s3://") {
				if info := raw[5:i]; len(info) > 3 && !strings.ContainsAny(info, "/?#") && strings.Contains(err.Error(), info) {
					t.Fatalf("error %q quotes the user info %q", err, info)
				}
			}
			return
		}
		again, err := ParseURL(loc.String())
		if err != nil || again != loc {
			t.Fatalf("ParseURL(%q) = %+v; ParseURL(String() = %q) = %+v, %v", raw, loc, loc.String(), again, err)
		}
	})
}
