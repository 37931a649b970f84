package narsource

import (
	"slices"
	"testing"

	"erismount/narinfo"
)

func TestChoose(t *testing.T) {
	xz := narinfo.Location{URL: "http://u/nar/a.nar.xz", Compression: "xz", FileSize: 3_000}
	zst := narinfo.Location{URL: "http://u/nar/a.nar.zst", Compression: "zstd", FileSize: 3_200}
	none := narinfo.Location{URL: "http://u/nar/a", Compression: "none"}
	odd := narinfo.Location{URL: "http://u/nar/a.nar.br", Compression: "brotli", FileSize: 10}
	for _, c := range []struct {
		name  string
		f     Facts
		force Kind
		want  []string
	}{
		{"nothing local: the compressed nar",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000, Locations: []narinfo.Location{xz, zst}},
			"", []string{"upstream[0] (3000 bytes)", "upstream[1] (3200 bytes)", "tree (24000 bytes)"}},
		{"most of the tree local",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000, TreeHeld: 22_000, TreeExact: true, Locations: []narinfo.Location{xz}},
			"", []string{"tree (2000 bytes)", "upstream[0] (3000 bytes)"}},
		{"incompressible: the tree costs about the nar",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 20_100, Locations: []narinfo.Location{none}},
			"", []string{"upstream[0] (20000 bytes)", "tree (20100 bytes)"}},
		{"a tie goes to ERIS",
			Facts{NarSize: 20_000, ERISNar: true, ERISNarBytes: 3_000, Locations: []narinfo.Location{xz}},
			"", []string{"eris-nar (3000 bytes)", "upstream[0] (3000 bytes)"}},
		{"eris-nar partly held",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000, ERISNar: true, ERISNarBytes: 3_100, ERISNarHeld: 2_000, Locations: []narinfo.Location{xz}},
			"", []string{"eris-nar (1100 bytes)", "upstream[0] (3000 bytes)", "tree (24000 bytes)"}},
		{"unknown compression skipped",
			Facts{NarSize: 20_000, Locations: []narinfo.Location{odd, xz}},
			"", []string{"upstream[1] (3000 bytes)"}},
		{"failed sources last",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000, TreeHeld: 24_000, Locations: []narinfo.Location{xz}, Failed: map[Kind]bool{Tree: true}},
			"", []string{"upstream[0] (3000 bytes)", "tree (0 bytes)"}},
		{"forced tree",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000, Locations: []narinfo.Location{xz}},
			Tree, []string{"tree (24000 bytes)"}},
		{"forced upstream, no location",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000},
			Upstream, nil},
		{"a local file moves nothing",
			Facts{NarSize: 20_000, Tree: true, TreeBytes: 24_000, TreeHeld: 12_000, Locations: []narinfo.Location{xz, {URL: "file:///srv/cache/nar/a.nar.zst", Compression: "zstd", FileSize: 3_200}}},
			"", []string{"upstream[1] (0 bytes)", "upstream[0] (3000 bytes)", "tree (12000 bytes)"}},
		{"nothing", Facts{NarSize: 20_000}, "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, o := range Choose(c.f, c.force) {
				got = append(got, o.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestParseKind(t *testing.T) {
	for s, want := range map[string]Kind{"": "", "auto": "", "tree": Tree, "eris-nar": ERISNar, "upstream": Upstream} {
		if k, err := ParseKind(s); err != nil || k != want {
			t.Errorf("%q: %q, %v", s, k, err)
		}
	}
	if _, err := ParseKind("ftp"); err == nil {
		t.Errorf("ParseKind accepted ftp")
	}
}
