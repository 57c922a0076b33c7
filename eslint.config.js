// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "client/dist/", "vendor/", "coverage/", ".parley/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: false } },
    rules: {
      "no-console": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
    },
  },
  {
    files: ["client/**/*.ts"],
    languageOptions: { globals: globals.browser },
  },
  {
    // The CLI, scripts, tests and benchmarks talk to a terminal on purpose.
    files: ["appservice/src/app/main.ts", "appservice/src/app/commands.ts", "scripts/**", "test/**"],
    rules: { "no-console": "off" },
  },
);
