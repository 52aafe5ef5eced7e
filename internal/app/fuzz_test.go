package app

import "testing"

func FuzzKeyValues(f *testing.F) {
	for _, s := range []string{"team=foo", "team=foo,owner=bar", "url=https://x/?a=1,2", "=x", "noequals", ",", "a=b=c", "k=\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kv := KeyValues{}
		if err := kv.SetList(s); err != nil {
			return
		}
		for k := range kv {
			if k == "" {
				t.Fatalf("%q gave an empty key", s)
			}
		}
	})
}
