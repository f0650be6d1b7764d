declare module 'virtual:flashattn-backends' {
  /** One loader per optional backend package; it rejects with the reason when the package is absent. */
  export const loaders: Record<string, () => Promise<Record<string, unknown>>>;
}
