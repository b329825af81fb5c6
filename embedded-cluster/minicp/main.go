// Command minicp is a multi-call binary holding a whole Kubernetes control plane:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy, each
// taken unchanged from its upstream module and configured only through its flags.
// Each component runs in a process of its own ("minicp kube-apiserver --flags");
// "minicp pki DIR [IP...]" writes the certificates and keys the components share; the
// API server's certificate is also valid for each IP given (the address pods reach it on).
// The Python launcher in tests/cluster starts the processes and wires them up.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
	_ "time/tzdata" // CronJob time zones, as upstream's mains do

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream's mains do
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's mains do
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream's mains do
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: minicp etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|pki DIR [flags]")
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	switch name {
	case "etcd":
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		os.Exit(run(apiserver.NewAPIServerCommand(), args))
	case "kube-controller-manager":
		os.Exit(run(kcm.NewControllerManagerCommand(), args))
	case "kube-scheduler":
		os.Exit(run(scheduler.NewSchedulerCommand(), args))
	case "kube-proxy":
		os.Exit(run(proxy.NewProxyCommand(), args))
	case "pki":
		if len(args) < 1 {
			fmt.Fprintln(os.Stderr, "usage: minicp pki DIR [IP...]")
			os.Exit(2)
		}
		if err := writePKI(args[0], args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "pki:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown component:", name)
		os.Exit(2)
	}
}

func run(cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	return cli.Run(cmd)
}

// writePKI writes ca.crt/ca.key, apiserver.crt/apiserver.key (signed by the CA, valid for
// loopback, the in-cluster names, the `kubernetes` Service's ClusterIP and extraIPs), sa.key
// (service-account signing) and, for the aggregation layer, front-proxy-ca.crt/.key with a
// client certificate front-proxy-client.crt/.key the API server presents to aggregated APIs.
func writePKI(dir string, extraIPs []string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}
	for _, s := range extraIPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("not an IP address: %q", s)
		}
		ips = append(ips, ip)
	}
	files := map[string][]byte{}
	ca, caKey, err := newCA("minicp-ca", files, "ca")
	if err != nil {
		return err
	}
	server := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		IPAddresses: ips,
	}
	if err := issue(server, ca, caKey, files, "apiserver"); err != nil {
		return err
	}
	proxyCA, proxyKey, err := newCA("minicp-front-proxy-ca", files, "front-proxy-ca")
	if err != nil {
		return err
	}
	client := &x509.Certificate{
		SerialNumber: big.NewInt(3),
		Subject:      pkix.Name{CommonName: "front-proxy-client"},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := issue(client, proxyCA, proxyKey, files, "front-proxy-client"); err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := addKey(files, "sa.key", saKey); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// newCA makes a self-signed CA and stores it as <stem>.crt and <stem>.key in files.
func newCA(cn string, files map[string][]byte, stem string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             start,
		NotAfter:              start.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	files[stem+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return cert, key, addKey(files, stem+".key", key)
}

// issue signs tmpl (given a fresh key and a validity period) with the CA and stores it as
// <stem>.crt and <stem>.key in files.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, files map[string][]byte, stem string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.NotBefore = ca.NotBefore
	tmpl.NotAfter = ca.NotAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	files[stem+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return addKey(files, stem+".key", key)
}

func addKey(files map[string][]byte, name string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	files[name] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	return nil
}
