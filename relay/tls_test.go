package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hookbatch/hookbatch/sink"
	"github.com/valyala/fasthttp"
)

// selfSigned writes a self-signed ECDSA certificate for 127.0.0.1 and
// localhost to dir and returns the file names and the certificate.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "hookbatch test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

func TestTLSIngest(t *testing.T) {
	certFile, keyFile, cert := selfSigned(t, t.TempDir())
	s := startSink(t, sink.Options{})
	cfg := testConfig(t, sub("s", s.URL(), 10, 10*time.Millisecond))
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	cfg.Ingest.AuthTokens = []string{tokenA}
	r := startRelay(t, cfg)
	url := "https://" + r.IngestAddr() + "/v1/events"

	pool := x509.NewCertPool()
	pool.AddCert(cert)
	trusting := &fasthttp.Client{
		TLSConfig:    &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	}
	send := func(c *fasthttp.Client, url string) (int, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI(url)
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", "Bearer "+tokenA)
		req.SetBodyString(`{"type":"order.created","data":{"over":"tls"}}`)
		err := c.DoTimeout(req, resp, 5*time.Second)
		return resp.StatusCode(), err
	}
	if status, err := send(trusting, url); err != nil || status != fasthttp.StatusAccepted {
		t.Fatalf("POST over TLS: %d %v, want 202", status, err)
	}
	waitFor(t, 10*time.Second, "the event at the sink", func() bool { return s.Stats().Events == 1 })

	// A client that does not trust the certificate refuses the server.
	untrusting := &fasthttp.Client{TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	if status, err := send(untrusting, url); err == nil {
		t.Fatalf("POST to an untrusted certificate: %d, want a TLS error", status)
	}
	// Plain HTTP to the TLS port gets no answer.
	plain := &fasthttp.Client{ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	if status, err := send(plain, "http://"+r.IngestAddr()+"/v1/events"); err == nil {
		t.Fatalf("plain HTTP to the TLS port answered %d, want a failed request", status)
	}
	if st := s.Stats(); st.Events != 1 {
		t.Fatalf("sink has %d events, want 1", st.Events)
	}
}
