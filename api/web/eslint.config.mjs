// Lint of the console's TypeScript: ESLint's and typescript-eslint's recommended rules with
// type information, plus a few that catch what a reviewer would (floating promises above all:
// a fetch nobody awaits fails silently).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", ".test-build/", "node_modules/"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: { allowDefaultProject: ["*.mjs"] },
                       tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      "eqeqeq": ["error", "always", { null: "ignore" }],
      "no-console": ["error", { allow: ["warn", "error"] }],
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafeCalls: [
        // node:test's test() returns a promise the runner itself awaits.
        { from: "package", package: "node:test", name: ["test", "describe", "it"] },
      ] }],
      "@typescript-eslint/consistent-type-imports": "error",
    },
  },
  {
    files: ["*.mjs"],
    languageOptions: { globals: { process: "readonly", console: "readonly" } },
    rules: { "no-console": "off" },
  },
);
