// The sh files the bundles import as text (esbuild's text loader; build.mjs).
declare module "*.sh" {
  const text: string;
  export default text;
}
