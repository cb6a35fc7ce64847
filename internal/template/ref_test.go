package template

import "testing"

func TestCheckRef(t *testing.T) {
	t.Parallel()
	for ref, ok := range map[string]bool{
		"base": true, "e2bdev/code-interpreter": true, "my-tpl:v2": true, "abcdefghij0123456789": true,
		"Team.Space/name_1:tag.1-x": true,
		"":                          false, "../../etc": false, "a/b/c": false, "..": false, "a/..": false, "a..b": true, "/base": false,
		"base:": false, "base:a:b": false, "ba se": false, "base\x00": false, "-x": false,
	} {
		if err := CheckRef("templateID", ref); (err == nil) != ok {
			t.Errorf("CheckRef(%q) = %v, want ok %v", ref, err, ok)
		}
	}
}
