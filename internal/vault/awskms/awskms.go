// Package awskms implements vault.KMS with AWS KMS (aws-sdk-go-v2): the
// config key of a KMS slot is encrypted and decrypted by a KMS key, under
// the encryption context that names the vault.
//
// Credentials, region and endpoint come from the standard AWS chain, as for
// the S3 store: environment (AWS_REGION, AWS_ENDPOINT_URL_KMS,
// AWS_ENDPOINT_URL, AWS_CA_BUNDLE, ...), shared config and credentials
// files, SSO, instance roles. Config overrides region and endpoint.
//
// Every request must go over HTTPS: Encrypt sends the vault's config key
// itself to KMS, so a plain-http endpoint (from any source) is refused
// before the request leaves, unless Config.AllowHTTP is set (for a local
// test KMS on loopback).
package awskms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Config overrides parts of the standard AWS configuration.
type Config struct {
	Region   string // empty: from the environment or shared config
	Endpoint string // empty: AWS_ENDPOINT_URL_KMS, shared config, or AWS's
	// CABundle is a PEM file of CAs to trust for the endpoint (as the S3
	// store's option; AWS_CA_BUNDLE works too).
	CABundle string
	// AllowHTTP permits a plain-http endpoint. Only for a test KMS: the
	// config key would cross the network in the clear.
	AllowHTTP bool
}

// KMS is a vault.KMS backed by AWS KMS.
type KMS struct {
	client *kms.Client
}

// New resolves the AWS configuration and returns a KMS client. It makes no
// request.
func New(ctx context.Context, cfg Config) (*KMS, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	}
	if cfg.CABundle != "" {
		pem, err := os.ReadFile(cfg.CABundle)
		if err != nil {
			return nil, fmt.Errorf("kms: CA bundle: %w", err)
		}
		opts = append(opts, awsconfig.WithCustomCABundle(bytes.NewReader(pem)))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("kms: load the AWS configuration: %w", err)
	}
	if ac.Region == "" {
		return nil, errors.New("kms: no region: set AWS_REGION or the profile's region")
	}
	client := kms.NewFromConfig(ac, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		if !cfg.AllowHTTP {
			o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
				return st.Finalize.Add(httpsOnly{}, middleware.After)
			})
		}
	})
	return &KMS{client: client}, nil
}

// httpsOnly refuses a request about to go out over plain http, whatever
// configured the endpoint.
type httpsOnly struct{}

func (httpsOnly) ID() string { return "S3CryptfsKMSHTTPSOnly" }

func (httpsOnly) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	if req, ok := in.Request.(*smithyhttp.Request); ok && req.URL.Scheme != "https" {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, &insecureError{url: req.URL.Redacted()}
	}
	return next.HandleFinalize(ctx, in)
}

type insecureError struct{ url string }

func (e *insecureError) Error() string {
	return fmt.Sprintf("KMS endpoint %s is not https: refused, since Encrypt sends the vault's config key to KMS "+
		"(set an https endpoint; plain http only for a local test KMS)", e.url)
}

// Encrypt implements vault.KMS.
func (k *KMS) Encrypt(ctx context.Context, keyID string, plaintext []byte, encCtx map[string]string) ([]byte, error) {
	out, err := k.client.Encrypt(ctx, &kms.EncryptInput{
		KeyId: aws.String(keyID), Plaintext: plaintext, EncryptionContext: encCtx,
	})
	if err != nil {
		return nil, explain("encrypt with", keyID, err)
	}
	return out.CiphertextBlob, nil
}

// Decrypt implements vault.KMS. The key id is passed to KMS too, so a
// ciphertext made by another key is refused instead of decrypted by it.
func (k *KMS) Decrypt(ctx context.Context, keyID string, blob []byte, encCtx map[string]string) ([]byte, error) {
	out, err := k.client.Decrypt(ctx, &kms.DecryptInput{
		KeyId: aws.String(keyID), CiphertextBlob: blob, EncryptionContext: encCtx,
	})
	if err != nil {
		return nil, explain("decrypt with", keyID, err)
	}
	return out.Plaintext, nil
}

// Sentinel classes of KMS failures, for errors.Is.
var (
	// ErrKeyUnusable: the key is disabled, pending deletion, missing, or
	// not a symmetric encryption key.
	ErrKeyUnusable = errors.New("KMS key unusable")
	// ErrDenied: the credentials may not use the key.
	ErrDenied = errors.New("KMS access denied")
	// ErrRefused: KMS will not decrypt this ciphertext with this key and
	// encryption context (another vault's slot, or another key).
	ErrRefused = errors.New("KMS refused the ciphertext")
)

// explain turns an SDK error into one that says what went wrong and what
// to check.
func explain(op, keyID string, err error) error {
	var ie *insecureError
	if errors.As(err, &ie) {
		return fmt.Errorf("kms: %w", ie)
	}
	var (
		disabled *types.DisabledException
		state    *types.KMSInvalidStateException
		notFound *types.NotFoundException
		usage    *types.InvalidKeyUsageException
		badCt    *types.InvalidCiphertextException
		wrongKey *types.IncorrectKeyException
	)
	switch {
	case errors.As(err, &disabled):
		return fmt.Errorf("kms: %s key %s: the key is disabled (enable it, or unlock with another slot): %w: %w", op, keyID, ErrKeyUnusable, err)
	case errors.As(err, &state):
		return fmt.Errorf("kms: %s key %s: the key is not usable in its current state (pending deletion or import?): %w: %w", op, keyID, ErrKeyUnusable, err)
	case errors.As(err, &notFound):
		return fmt.Errorf("kms: %s key %s: no such key in this account and region: %w: %w", op, keyID, ErrKeyUnusable, err)
	case errors.As(err, &usage):
		return fmt.Errorf("kms: %s key %s: not a symmetric ENCRYPT_DECRYPT key: %w: %w", op, keyID, ErrKeyUnusable, err)
	case errors.As(err, &badCt), errors.As(err, &wrongKey):
		return fmt.Errorf("kms: %s key %s: KMS refused the ciphertext (made by another key, or for another vault: the encryption context differs): %w: %w",
			op, keyID, ErrRefused, err)
	}
	var ae smithy.APIError
	if errors.As(err, &ae) && (ae.ErrorCode() == "AccessDeniedException" || ae.ErrorCode() == "AccessDenied") {
		return fmt.Errorf("kms: %s key %s: access denied (check the key policy and the IAM permissions kms:Encrypt / kms:Decrypt): %w: %w",
			op, keyID, ErrDenied, err)
	}
	return fmt.Errorf("kms: %s key %s: %w", op, keyID, err)
}
