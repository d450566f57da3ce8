package cipher

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// sealAll encrypts plain block by block with Seal into a full object.
func sealAll(t testing.TB, fk *FileKey, plain []byte) []byte {
	t.Helper()
	l := fk.Layout()
	obj := fk.Header()
	n := l.BlockCount(int64(len(plain)))
	for i := uint64(0); i < n; i++ {
		start := l.BlockIndexToPlainOff(i)
		end := min(start+int64(l.BlockSize), int64(len(plain)))
		obj = fk.Seal(obj, plain[start:end], i, i == n-1)
	}
	if want := l.PlainSizeToCipherSize(int64(len(plain))); int64(len(obj)) != want {
		t.Fatalf("sealed object is %d bytes, layout says %d", len(obj), want)
	}
	return obj
}

// openAll decrypts an object block by block with OpenHeader and Open.
func openAll(k *Keys, obj []byte) ([]byte, error) {
	l := k.Layout()
	if len(obj) < HeaderSize {
		return nil, ErrCorrupt
	}
	size, err := l.CipherSizeToPlainSize(int64(len(obj)))
	if err != nil {
		return nil, err
	}
	fk, err := k.OpenHeader(obj[:HeaderSize])
	if err != nil {
		return nil, err
	}
	var out []byte
	n := l.BlockCount(size)
	for i := uint64(0); i < n; i++ {
		start := l.BlockIndexToCipherOff(i)
		end := min(start+int64(l.BlockSize)+BlockOverhead, int64(len(obj)))
		if out, err = fk.Open(out, obj[start:end], i, i == n-1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func writeAll(t testing.TB, k *Keys, plain []byte, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, k)
	if err != nil {
		t.Fatal(err)
	}
	for p := plain; len(p) > 0; {
		c := min(chunk, len(p))
		if n, err := w.Write(p[:c]); err != nil || n != c {
			t.Fatalf("Write: %d, %v", n, err)
		}
		p = p[c:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes()[:HeaderSize], w.FileKey().Header()) {
		t.Fatal("Writer did not start with its FileKey's header")
	}
	return buf.Bytes()
}

func roundTripSizes(b int) []int {
	return []int{0, 1, b - 1, b, b + 1, 2*b - 1, 2 * b, 3 * b, 3*b + 17}
}

func TestRoundTripSealOpen(t *testing.T) {
	for _, bs := range []int{MinBlockSize, DefaultBlockSize} {
		k := testKeys(t, bs)
		for _, size := range roundTripSizes(bs) {
			plain := pattern(size, byte(size))
			fk, err := k.NewFile()
			if err != nil {
				t.Fatal(err)
			}
			obj := sealAll(t, fk, plain)
			got, err := openAll(k, obj)
			if err != nil {
				t.Fatalf("bs %d size %d: %v", bs, size, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("bs %d size %d: plaintext differs", bs, size)
			}
		}
	}
}

func TestRoundTripWriterReader(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bs := range []int{MinBlockSize, DefaultBlockSize} {
		k := testKeys(t, bs)
		for _, size := range roundTripSizes(bs) {
			plain := pattern(size, byte(size>>3))
			// Random chunks, one single Write, and block-sized writes.
			for _, chunk := range []int{1 + rng.IntN(bs+bs/2), size + 1, bs} {
				obj := writeAll(t, k, plain, chunk)
				if want := k.Layout().PlainSizeToCipherSize(int64(size)); int64(len(obj)) != want {
					t.Fatalf("bs %d size %d chunk %d: object %d bytes, want %d", bs, size, chunk, len(obj), want)
				}
				checkReader(t, rng, k, obj, plain)
			}
		}
	}
}

// checkReader opens obj with NewReader and compares a whole read and random
// ReadAt windows with plain.
func checkReader(t *testing.T, rng *rand.Rand, k *Keys, obj, plain []byte) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(obj), int64(len(obj)), k)
	if err != nil {
		t.Fatalf("size %d: NewReader: %v", len(plain), err)
	}
	if r.Size() != int64(len(plain)) {
		t.Fatalf("Size %d, want %d", r.Size(), len(plain))
	}
	all, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()+10))
	if err != nil || !bytes.Equal(all, plain) {
		t.Fatalf("size %d: full read differs (err %v, got %d bytes)", len(plain), err, len(all))
	}
	for range 20 {
		off := rng.Int64N(int64(len(plain)) + 3)
		p := make([]byte, rng.IntN(3*k.Layout().BlockSize))
		n, err := r.ReadAt(p, off)
		wantN := max(0, min(int64(len(p)), int64(len(plain))-off))
		if int64(n) != wantN {
			t.Fatalf("size %d: ReadAt(%d bytes, %d) = %d, want %d (err %v)", len(plain), len(p), off, n, wantN, err)
		}
		if wantN < int64(len(p)) && !errors.Is(err, io.EOF) {
			t.Fatalf("short ReadAt without io.EOF: %v", err)
		}
		if wantN == int64(len(p)) && err != nil {
			t.Fatalf("full ReadAt with error %v", err)
		}
		if n > 0 && !bytes.Equal(p[:n], plain[off:off+int64(n)]) {
			t.Fatalf("size %d: ReadAt(%d bytes, %d) content differs", len(plain), len(p), off)
		}
	}
}

// TestRoundTripRandom is property-style: random sizes, contents, block sizes,
// write chunking and read windows must all round-trip through both APIs.
func TestRoundTripRandom(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	keys := map[int]*Keys{}
	for range 40 {
		bs := MinBlockSize << rng.IntN(3)
		if keys[bs] == nil {
			keys[bs] = testKeys(t, bs)
		}
		k := keys[bs]
		plain := make([]byte, rng.IntN(5*bs))
		for i := range plain {
			plain[i] = byte(rng.Uint32())
		}
		obj := writeAll(t, k, plain, 1+rng.IntN(2*bs))
		got, err := openAll(k, obj)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("seed %d: size %d bs %d: Writer->Open failed: %v", seed, len(plain), bs, err)
		}
		fk, err := k.NewFile()
		if err != nil {
			t.Fatal(err)
		}
		checkReader(t, rng, k, sealAll(t, fk, plain), plain)
	}
}
