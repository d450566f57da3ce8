package cipher

import (
	"bytes"
	"crypto/aes"
	gocipher "crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"io"
	"slices"
	"testing"
	"time"

	sha256simd "github.com/minio/sha256-simd"
)

// Run: go test -run '^$' -bench . -benchtime 2s ./cipher/
// The "bare" sub-benchmarks are the baseline: crypto/cipher AES-256-GCM with
// a fixed nonce and no associated data, on the same sizes in the same run.

func benchSizes() []struct {
	name string
	n    int
} {
	return []struct {
		name string
		n    int
	}{{"64KiB", DefaultBlockSize}}
}

func bareGCM(b *testing.B) gocipher.AEAD {
	block, err := aes.NewCipher(pattern(32, 1))
	if err != nil {
		b.Fatal(err)
	}
	aead, err := gocipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	return aead
}

func BenchmarkSeal(b *testing.B) {
	for _, sz := range benchSizes() {
		plain := pattern(sz.n, 1)
		b.Run("format/"+sz.name, func(b *testing.B) {
			fk, err := testKeys(b, DefaultBlockSize).NewFile()
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 0, sz.n+BlockOverhead)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				buf = fk.Seal(buf[:0], plain, uint64(i), false)
			}
		})
		b.Run("bare/"+sz.name, func(b *testing.B) {
			aead := bareGCM(b)
			nonce := make([]byte, NonceSize)
			buf := make([]byte, 0, sz.n+TagSize)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				buf = aead.Seal(buf[:0], nonce, plain, nil)
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, sz := range benchSizes() {
		plain := pattern(sz.n, 1)
		b.Run("format/"+sz.name, func(b *testing.B) {
			fk, err := testKeys(b, DefaultBlockSize).NewFile()
			if err != nil {
				b.Fatal(err)
			}
			sealed := fk.Seal(nil, plain, 5, false)
			buf := make([]byte, 0, sz.n)
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if buf, err = fk.Open(buf[:0], sealed, 5, false); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("bare/"+sz.name, func(b *testing.B) {
			aead := bareGCM(b)
			nonce := make([]byte, NonceSize)
			sealed := aead.Seal(nil, nonce, plain, nil)
			buf := make([]byte, 0, sz.n)
			var err error
			b.SetBytes(int64(sz.n))
			b.ReportAllocs()
			for b.Loop() {
				if buf, err = aead.Open(buf[:0], nonce, sealed, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStream measures the streaming Writer and Reader on 16 MiB.
func BenchmarkStream(b *testing.B) {
	const n = 16 << 20
	plain := pattern(n, 3)
	k := testKeys(b, DefaultBlockSize)
	b.Run("Writer", func(b *testing.B) {
		b.SetBytes(n)
		b.ReportAllocs()
		for b.Loop() {
			w, err := NewWriter(io.Discard, k)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.Write(plain); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Reader", func(b *testing.B) {
		obj := writeAll(b, k, plain, 1<<20)
		out := make([]byte, n)
		b.SetBytes(n)
		b.ReportAllocs()
		for b.Loop() {
			r, err := NewReader(bytes.NewReader(obj), int64(len(obj)), k)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.ReadAt(out, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkUnlock is the cost of one passphrase unlock with the production
// Argon2id parameters (what a guess costs an attacker, and what mounting
// costs a user).
func BenchmarkUnlock(b *testing.B) {
	c, _, err := newConfig(rand.Reader, testPass, ConfigOptions{}, false)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Unlock(testPass); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVsBare interleaves the format's Seal (or Open) with bare
// AES-256-GCM on the same 64 KiB plaintext, alternating which goes first,
// and reports the format's throughput as a percentage of bare
// ("%of-bare", from the median time of each). Interleaving at block
// granularity exposes both to the same load, so the ratio stays meaningful
// on a shared, busy machine where separate sub-benchmarks drift apart.
func BenchmarkVsBare(b *testing.B) {
	plain := pattern(DefaultBlockSize, 1)
	for _, op := range []string{"Seal", "Open"} {
		b.Run(op, func(b *testing.B) {
			fk, err := testKeys(b, DefaultBlockSize).NewFile()
			if err != nil {
				b.Fatal(err)
			}
			aead := bareGCM(b)
			nonce := make([]byte, NonceSize)
			sealedFmt := fk.Seal(nil, plain, 7, false)
			sealedBare := aead.Seal(nil, nonce, plain, nil)
			out := make([]byte, 0, DefaultBlockSize+BlockOverhead)
			format := func() {
				if op == "Seal" {
					out = fk.Seal(out[:0], plain, 7, false)
				} else if out, err = fk.Open(out[:0], sealedFmt, 7, false); err != nil {
					b.Fatal(err)
				}
			}
			bare := func() {
				if op == "Seal" {
					out = aead.Seal(out[:0], nonce, plain, nil)
				} else if out, err = aead.Open(out[:0], nonce, sealedBare, nil); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(2 * DefaultBlockSize)
			mf, mb := interleave(b, format, bare)
			b.ReportMetric(100*float64(mb)/float64(mf), "%of-bare")
			b.ReportMetric(float64(DefaultBlockSize)/mf.Seconds()/1e6, "format-MB/s")
			b.ReportMetric(float64(DefaultBlockSize)/mb.Seconds()/1e6, "bare-MB/s")
		})
	}
}

// interleave runs a and c alternately (swapping which goes first on every
// iteration) and returns the median time of each.
func interleave(b *testing.B, a, c func()) (ma, mc time.Duration) {
	var ta, tc []time.Duration
	for i := 0; b.Loop(); i++ {
		first, second := a, c
		if i%2 == 1 {
			first, second = c, a
		}
		t0 := time.Now()
		first()
		t1 := time.Now()
		second()
		t2 := time.Now()
		if i%2 == 0 {
			ta, tc = append(ta, t1.Sub(t0)), append(tc, t2.Sub(t1))
		} else {
			tc, ta = append(tc, t1.Sub(t0)), append(ta, t2.Sub(t1))
		}
	}
	return median(ta), median(tc)
}

// BenchmarkSHA256VsSIMD interleaves crypto/sha256 and minio/sha256-simd on
// the same input (batched so that each timed sample is at least ~64 KiB of
// hashing) and reports sha256-simd's speed as a percentage of
// crypto/sha256's ("simd-%of-crypto"; above 100 means simd is faster).
func BenchmarkSHA256VsSIMD(b *testing.B) {
	for _, c := range []struct {
		name string
		n    int
	}{{"32B", 32}, {"64KiB", 64 << 10}, {"8MiB", 8 << 20}} {
		data := pattern(c.n, 9)
		reps := max(1, (64<<10)/c.n)
		run := func(newH func() hash.Hash) func() {
			h := newH()
			var sum [32]byte
			return func() {
				for range reps {
					h.Reset()
					h.Write(data)
					h.Sum(sum[:0])
				}
			}
		}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(2 * c.n * reps))
			mc, ms := interleave(b, run(sha256.New), run(sha256simd.New))
			b.ReportMetric(100*float64(mc)/float64(ms), "simd-%of-crypto")
			b.ReportMetric(float64(c.n*reps)/mc.Seconds()/1e6, "crypto-MB/s")
			b.ReportMetric(float64(c.n*reps)/ms.Seconds()/1e6, "simd-MB/s")
		})
	}
	// This package's own uses: one HKDF subkey, one HMAC commitment.
	master, msg := pattern(32, 1), pattern(132, 2)
	for _, c := range []struct {
		name string
		op   func(func() hash.Hash)
	}{
		{"HKDF", func(h func() hash.Hash) { _, _ = hkdf.Key(h, master, nil, labelKeyID, 16) }},
		{"HMAC", func(h func() hash.Hash) {
			m := hmac.New(h, master)
			m.Write(msg)
			m.Sum(nil)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			const reps = 100
			batch := func(h func() hash.Hash) func() {
				return func() {
					for range reps {
						c.op(h)
					}
				}
			}
			mc, ms := interleave(b, batch(sha256.New), batch(sha256simd.New))
			b.ReportMetric(100*float64(mc)/float64(ms), "simd-%of-crypto")
			b.ReportMetric(float64(mc.Nanoseconds())/reps, "crypto-ns/op")
			b.ReportMetric(float64(ms.Nanoseconds())/reps, "simd-ns/op")
		})
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkNewFile is the per-version cost of a fresh data key: version 2
// derives it (HKDF over the salt, HMAC commitment, AEAD setup), version 1
// drew it at random and wrapped it (AES-GCM seal, HMAC, AEAD setup). Either
// is paid once per upload of a file, next to sealing its blocks: compare
// with BenchmarkSeal's time per 64 KiB block.
func BenchmarkNewFile(b *testing.B) {
	k := testKeys(b, DefaultBlockSize)
	for _, v := range []struct {
		name string
		new  func(*Keys) (*FileKey, error)
	}{{"v1", (*Keys).newFileV1}, {"v2", (*Keys).NewFile}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.new(k); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("v2/open", func(b *testing.B) {
		fk, err := k.NewFile()
		if err != nil {
			b.Fatal(err)
		}
		h := fk.Header()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := k.OpenHeader(h); err != nil {
				b.Fatal(err)
			}
		}
	})
}
