// Package names is the one place that turns a directory entry into an
// object key and a listed key back into an entry name. It has two layouts
// (docs/FORMAT.md, "Names"):
//
//   - plaintext names (vaults made before names were encrypted, and
//     `init --plaintext-names`): the key mirrors the path, "a/b/c", a
//     directory is the marker "a/b/" and its entries live under it, so
//     other S3 tools can browse the bucket;
//   - encrypted names: every directory has a random 16-byte id (the root's
//     is empty); its entries live under the short prefix "d/<hash of id>/",
//     each named by the AES-SIV encryption of its name with the directory
//     id as associated data, base64url-encoded; a subdirectory's marker
//     "d/<hash>/<name>/" carries the child's id, sealed with AES-SIV bound to
//     the parent's id and the name. The key length does not grow with depth,
//     and renaming a directory moves one marker whatever lies beneath it.
//
// The package does no I/O and knows nothing of FUSE: the caller passes the
// metadata a stored entry carries (Stat answers, or the attribute index).
package names

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tink-crypto/tink-go/v2/daead/subtle"
)

// Metadata keys (x-amz-meta-*) an entry of an encrypted-name vault may
// carry; every metadata write of the entry must keep them (Layout.Keep).
const (
	// MetaDirID is a directory marker's sealed id (base64url).
	MetaDirID = "dirid"
	// MetaLongName is the full encoded name of an entry stored under a
	// shortened (hashed) segment.
	MetaLongName = "name"
)

const (
	// IDSize is the size of a directory id.
	IDSize = 16
	// MaxSegment is the longest encoded name stored as the key segment
	// itself; a longer one is stored under its hash (LongSuffix). MinIO
	// accepts 255 bytes per key segment and the local store 251, so every
	// segment this layout makes fits both.
	MaxSegment = 220
	// LongSuffix ends a shortened segment: base64url never contains '.', so
	// no encoded name can end in it.
	LongSuffix = ".lng"
	// DirRoot is the prefix under which every directory's entries live.
	DirRoot = "d/"

	labelNameKey  = "s3cryptfs names: entry names (AES-SIV)"
	labelDirIDKey = "s3cryptfs names: directory ids (AES-SIV)"
	labelHashKey  = "s3cryptfs names: directory prefixes (HMAC-SHA256)"
	hashBytes     = 20 // of the HMAC in a directory prefix: 32 base32 characters
)

// Errors. A name that does not decrypt in the directory it is listed in was
// either tampered with or copied there from another directory or vault.
var (
	ErrNotName  = errors.New("names: not an entry name of this directory")
	ErrNeedMeta = errors.New("names: shortened entry: its full name is in its metadata")
	ErrBadDirID = errors.New("names: directory marker without a valid id")
	ErrTooLong  = errors.New("names: name too long")
)

var (
	b64 = base64.RawURLEncoding
	b32 = base32.StdEncoding.WithPadding(base32.NoPadding)
)

// Dir locates a directory's entries.
type Dir struct {
	// Prefix is the key prefix of its entries: "" for the root of a
	// plaintext-name vault, "a/b/" below it, "d/<hash>/" with encrypted
	// names.
	Prefix string
	// ID is the directory id with encrypted names (empty for the root).
	ID []byte
}

// Layout maps entries to keys. The zero value is not usable: see Plain and
// New.
type Layout struct {
	names  *subtle.AESSIV // nil: plaintext names
	dirIDs *subtle.AESSIV
	hash   []byte
}

// Plain is the layout of a vault with plaintext names.
func Plain() *Layout { return &Layout{} }

// New is the encrypted-name layout for a vault's 32-byte name key
// (cipher.Keys.NameKey).
func New(nameKey []byte) (*Layout, error) {
	if len(nameKey) != 32 {
		return nil, fmt.Errorf("names: name key of %d bytes, want 32", len(nameKey))
	}
	derive := func(label string, n int) []byte {
		k, err := hkdf.Key(sha256.New, nameKey, nil, label, n)
		if err != nil {
			panic("BUG: names: " + err.Error())
		}
		return k
	}
	n, err := subtle.NewAESSIV(derive(labelNameKey, subtle.AESSIVKeySize))
	if err != nil {
		return nil, err
	}
	d, err := subtle.NewAESSIV(derive(labelDirIDKey, subtle.AESSIVKeySize))
	if err != nil {
		return nil, err
	}
	return &Layout{names: n, dirIDs: d, hash: derive(labelHashKey, 32)}, nil
}

// Encrypted reports whether names are encrypted.
func (l *Layout) Encrypted() bool { return l.names != nil }

// Root is the root directory.
func (l *Layout) Root() Dir {
	if !l.Encrypted() {
		return Dir{}
	}
	return Dir{Prefix: l.prefix(nil)}
}

// prefix is "d/" + base32(HMAC(hash key, id))[:32] + "/".
func (l *Layout) prefix(id []byte) string {
	m := hmac.New(sha256.New, l.hash)
	m.Write(id)
	return DirRoot + strings.ToLower(b32.EncodeToString(m.Sum(nil)[:hashBytes])) + "/"
}

// Entry is where one directory entry is stored.
type Entry struct {
	// Key is the object key of a file, symlink or special file; a
	// directory's marker is Key + "/".
	Key string
	// Seg is Key's last segment, as a delimited listing of the directory
	// shows it (a subdirectory's without the slash).
	Seg string
	// Long is the full encoded name when Key ends in a shortened segment,
	// to be stored as MetaLongName; empty otherwise.
	Long string
}

// Entry returns where name is stored in d. ErrTooLong when the key would not
// fit an S3 key (plaintext names only: encrypted keys are short).
func (l *Layout) Entry(d Dir, name string) (Entry, error) {
	if !l.Encrypted() {
		k := d.Prefix + name
		if len(k)+1 > maxKeyLen {
			return Entry{}, ErrTooLong
		}
		return Entry{Key: k, Seg: name}, nil
	}
	ct, err := l.names.EncryptDeterministically([]byte(name), d.ID)
	if err != nil {
		return Entry{}, fmt.Errorf("names: %w", err)
	}
	enc := b64.EncodeToString(ct)
	if len(enc) <= MaxSegment {
		return Entry{Key: d.Prefix + enc, Seg: enc}, nil
	}
	s := shorten(enc)
	return Entry{Key: d.Prefix + s, Seg: s, Long: enc}, nil
}

// maxKeyLen is the longest S3 key.
const maxKeyLen = 1024

// shorten is the segment of a long encoded name: base64url(SHA-256(enc)) +
// LongSuffix (47 bytes).
func shorten(enc string) string {
	s := sha256.Sum256([]byte(enc))
	return b64.EncodeToString(s[:]) + LongSuffix
}

// IsLong reports whether a listed segment is a shortened one, whose name
// needs MetaLongName.
func IsLong(seg string) bool { return strings.HasSuffix(seg, LongSuffix) }

// Name returns the entry name of the key segment seg listed in d (without
// the trailing "/" of a marker). long is the entry's MetaLongName, needed
// only when IsLong(seg) (ErrNeedMeta without it); it is checked against seg.
// ErrNotName when seg is not a name of d.
func (l *Layout) Name(d Dir, seg, long string) (string, error) {
	if !l.Encrypted() {
		return seg, nil
	}
	enc := seg
	if IsLong(seg) {
		if long == "" {
			return "", ErrNeedMeta
		}
		if shorten(long) != seg || len(long) <= MaxSegment {
			return "", fmt.Errorf("%w: the full name of a shortened entry does not match its key", ErrNotName)
		}
		enc = long
	}
	ct, err := b64.DecodeString(enc)
	if err != nil {
		return "", fmt.Errorf("%w: not base64url", ErrNotName)
	}
	p, err := l.names.DecryptDeterministically(ct, d.ID)
	if err != nil {
		return "", fmt.Errorf("%w: does not authenticate", ErrNotName)
	}
	name := string(p)
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("%w: decrypts to an invalid name", ErrNotName)
	}
	return name, nil
}

// dirIDAD binds a sealed directory id to its parent and name.
func dirIDAD(parent []byte, name string) []byte {
	ad := make([]byte, 0, 1+len(parent)+len(name))
	ad = append(ad, byte(len(parent)))
	ad = append(ad, parent...)
	return append(ad, name...)
}

// NewDir makes a new subdirectory name of parent: its Dir and the metadata
// its marker must carry (nothing with plaintext names).
func (l *Layout) NewDir(parent Dir, name string) (Dir, map[string]string, error) {
	if !l.Encrypted() {
		return Dir{Prefix: parent.Prefix + name + "/"}, nil, nil
	}
	return l.newDir(rand.Reader, parent, name)
}

func (l *Layout) newDir(rng io.Reader, parent Dir, name string) (Dir, map[string]string, error) {
	id := make([]byte, IDSize)
	if _, err := io.ReadFull(rng, id); err != nil {
		return Dir{}, nil, fmt.Errorf("names: random directory id: %w", err)
	}
	meta, err := l.MoveDir(Dir{ID: id}, parent, name)
	if err != nil {
		return Dir{}, nil, err
	}
	return Dir{Prefix: l.prefix(id), ID: id}, meta, nil
}

// MoveDir is the marker metadata of directory d once it is entry name of
// parent (a new directory, or a rename): its id sealed for that place.
func (l *Layout) MoveDir(d Dir, parent Dir, name string) (map[string]string, error) {
	if !l.Encrypted() {
		return nil, nil
	}
	if len(d.ID) != IDSize {
		return nil, fmt.Errorf("%w: id of %d bytes", ErrBadDirID, len(d.ID))
	}
	sealed, err := l.dirIDs.EncryptDeterministically(d.ID, dirIDAD(parent.ID, name))
	if err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	return map[string]string{MetaDirID: b64.EncodeToString(sealed)}, nil
}

// Child is the Dir of subdirectory name of parent whose marker carries meta
// (nil for a directory without marker: plaintext names only).
func (l *Layout) Child(parent Dir, name string, meta map[string]string) (Dir, error) {
	if !l.Encrypted() {
		return Dir{Prefix: parent.Prefix + name + "/"}, nil
	}
	v, ok := meta[MetaDirID]
	if !ok {
		return Dir{}, fmt.Errorf("%w: no %s metadata", ErrBadDirID, MetaDirID)
	}
	sealed, err := b64.DecodeString(v)
	if err != nil {
		return Dir{}, fmt.Errorf("%w: not base64url", ErrBadDirID)
	}
	id, err := l.dirIDs.DecryptDeterministically(sealed, dirIDAD(parent.ID, name))
	if err != nil || len(id) != IDSize {
		return Dir{}, fmt.Errorf("%w: it does not authenticate here (moved from another directory or tampered with)", ErrBadDirID)
	}
	return Dir{Prefix: l.prefix(id), ID: id}, nil
}

// Keep returns the layout's values of meta (MetaDirID, MetaLongName), which
// every metadata write of the entry must carry along.
func Keep(meta map[string]string) map[string]string {
	var out map[string]string
	for _, k := range []string{MetaDirID, MetaLongName} {
		if v, ok := meta[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// Equal reports whether a and b are the same directory.
func (d Dir) Equal(o Dir) bool { return d.Prefix == o.Prefix && bytes.Equal(d.ID, o.ID) }

// Marker is the key of the object that stands for the directory stored at
// key (an Entry's Key): with plaintext names the marker key + "/" (a
// zero-length object whose key is the prefix of the directory's entries);
// with encrypted names the entry's key itself, a zero-length object with
// metadata type=dir that also holds the directory's id. One object per
// entry, whatever its kind, so a lookup is one HEAD and a listing shows
// directories as objects with ETags (which the attribute index can
// vouch for).
func (l *Layout) Marker(key string) string {
	if l.Encrypted() {
		return key
	}
	return key + "/"
}

// SeparateMarkers reports whether directories have keys of their own
// (plaintext names: "d/"), apart from a file of the same name ("d").
func (l *Layout) SeparateMarkers() bool { return !l.Encrypted() }

// Key is the object key of the key segment seg listed in d.
func (d Dir) Key(seg string) string { return d.Prefix + seg }

// PlainDir is the location of the plaintext-names directory whose key (an
// Entry's Key, no slash) is key: its entries are under key + "/".
func PlainDir(key string) Dir { return Dir{Prefix: key + "/"} }

// Under reports whether key is key dir itself or lies below it, with
// plaintext names (where a directory's entries share its key as a prefix).
func Under(key, dir string) bool { return strings.HasPrefix(key+"/", dir+"/") }

// The vault's own objects at the store root, outside every directory's
// entries: the config, and the namespace of the per-directory attribute
// indexes (fs.IndexRoot has the index's story).
const (
	ConfigKey = ".s3cryptfs.conf"
	IndexRoot = ".s3cryptfs.idx"
)

// IndexKey is the key of the attribute index of the directory whose entries
// are under prefix ("" for the root of a plaintext-names vault).
func IndexKey(prefix string) string { return IndexRoot + "/" + prefix + "_" }

// Rebase is key moved from under the prefix from to under the prefix to:
// a plaintext-names directory rename moves every key below it.
func Rebase(key, from, to string) string { return to + strings.TrimPrefix(key, from) }
