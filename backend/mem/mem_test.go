package mem

import (
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) backend.Store { return New() })
}
