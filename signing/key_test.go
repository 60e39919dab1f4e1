package signing

import (
	"bytes"
	"strings"
	"testing"
)

func TestDecodeSecret(t *testing.T) {
	f := func(secret string, want []byte) {
		t.Helper()
		got, err := DecodeSecret(secret)
		if err != nil {
			t.Fatalf("DecodeSecret(%q): %v", secret, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("DecodeSecret(%q) = %x, want %x", secret, got, want)
		}
	}
	f("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", []byte{
		0x31, 0xf2, 0x90, 0xf6, 0xbf, 0x06, 0x29, 0x8a, 0xab, 0x4f, 0x08, 0xd4,
		0x3c, 0x3f, 0x08, 0x2c, 0xf6, 0x48, 0xa3, 0x62, 0xda, 0x2d, 0xa4, 0xb0,
	})
	f("whsec_aGVsbG8=", []byte("hello"))
	// No prefix: the secret's own bytes, even when they look like base64.
	f("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", []byte("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
	f("plain secret", []byte("plain secret"))
	// The prefix is case-sensitive.
	f("WHSEC_aGVsbG8=", []byte("WHSEC_aGVsbG8="))
}

func TestDecodeSecretErrors(t *testing.T) {
	f := func(secret string) {
		t.Helper()
		check := func(what string, err error) {
			t.Helper()
			if err == nil {
				t.Fatalf("%s(%q): no error", what, secret)
			}
			msg := err.Error()
			if tail := strings.TrimPrefix(secret, "whsec_"); len(tail) >= 4 && strings.Contains(msg, tail) {
				t.Fatalf("%s(%q): error %q contains the secret", what, secret, msg)
			}
			// No fragment of the secret either (short ones aside, which
			// could match words of the message by chance).
			for i := 0; i+8 <= len(secret); i++ {
				if strings.Contains(msg, secret[i:i+8]) {
					t.Fatalf("%s(%q): error %q contains part of the secret", what, secret, msg)
				}
			}
		}
		_, err := DecodeSecret(secret)
		check("DecodeSecret", err)
		_, err = NewSigner(secret, nil)
		check("NewSigner", err)
		_, err = NewSigner("whsec_aGVsbG8=", []string{"ok", secret})
		check("NewSigner previous", err)
		_, err = NewVerifier("ok", secret)
		check("NewVerifier", err)
	}
	f("")
	f("whsec_")
	f("whsec_!!!!VerySecretKeyMaterial")
	f("whsec_VerySecretKeyMaterial!!!!")
	f("whsec_c2VjcmV0S2V5TWF0ZXJpYWw")      // missing padding
	f("whsec_c2VjcmV0S2V5TWF0ZXJpYWw===")   // too much padding
	f("whsec_c2VjcmV0-2V5TWF0ZXJpYWw_=")    // URL alphabet
	f("whsec_c2VjcmV0S2V5 TWF0ZXJpYWw=")    // space
	f("whsec_c2VjcmV0S2V5TWF0ZXJpYWw=\x00") // NUL

	if _, err := NewVerifier(); err == nil {
		t.Fatal("NewVerifier(): no error")
	}
}
