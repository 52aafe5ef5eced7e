package keys

import "testing"

func TestKMSReference(t *testing.T) {
	cases := map[string]string{
		"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": "awskms:///arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"arn:aws:kms:us-east-1:111122223333:alias/signing":                            "awskms:///arn:aws:kms:us-east-1:111122223333:alias/signing",
		"alias/signing":                        "awskms:///alias/signing",
		"1234abcd-12ab-34cd-56ef-1234567890ab": "awskms:///1234abcd-12ab-34cd-56ef-1234567890ab",
		"mrk-1234abcd12ab34cd56ef1234567890ab": "awskms:///mrk-1234abcd12ab34cd56ef1234567890ab",
		"awskms://kms.internal:4566/alias/x":   "awskms://kms.internal:4566/alias/x",
		"awskms:///alias/x":                    "awskms:///alias/x",
		"cosign.key":                           "",
		"/etc/keys/signing.pem":                "",
		"arn:aws:s3:::bucket":                  "",
	}
	for in, want := range cases {
		got, ok := KMSReference(in)
		if got != want || ok != (want != "") {
			t.Errorf("KMSReference(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}
