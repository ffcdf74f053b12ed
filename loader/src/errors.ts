// Errors the CLI maps to exit code 2: the input was wrong, and nothing was changed.
export class UsageError extends Error {
  override name = 'UsageError';
}
