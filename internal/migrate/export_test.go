package migrate

import (
	"context"
	"os"

	"gorm.io/gorm"
)

// RunDir is Run over the step files under dir instead of the embedded ones.
func RunDir(ctx context.Context, db *gorm.DB, dir, prefix string, opts Config, components ...string) ([]Step, error) {
	return source{os.DirFS(dir), "."}.run(ctx, db, prefix, opts, components...)
}

// StatusDir is Status over the step files under dir.
func StatusDir(ctx context.Context, db *gorm.DB, dir, prefix string, components ...string) ([]State, error) {
	return source{os.DirFS(dir), "."}.status(ctx, db, prefix, components...)
}

// StepsDir is Steps over the step files under dir.
func StepsDir(dir, component, dialect string) ([]Step, error) {
	return source{os.DirFS(dir), "."}.steps(component, dialect)
}
