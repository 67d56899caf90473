// The MINC_* settings table (lib/core/settings.ts) against the code: needs no root.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { MINC_OPTIONS, optionFor, optionsFor } from "../lib/boot/minc-options.ts";
import {
  BOOT_SETTINGS,
  LIMIT_SETTINGS,
  SETTING_NAMES,
  SETTINGS,
  isSettingName,
  readSettings,
  settingsEnv,
} from "../lib/core/settings.ts";
import { REPO } from "./helpers.ts";

/** Names that look like settings but are not: the option table's own. */
const NOT_SETTINGS = new Set(["MINC_OPTIONS"]);

/** Every MINC_* name in the sources of bin/, lib/ and libexec/ (.ts and .sh), with the files that name it. */
function namesInSources(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  for (const dir of ["bin", "lib", "libexec"]) {
    for (const file of readdirSync(`${REPO}/${dir}`).filter((f) => /\.(ts|sh)$/.test(f))) {
      for (const [name] of readFileSync(`${REPO}/${dir}/${file}`, "utf8").matchAll(/\bMINC_[A-Z][A-Z0-9_]*/g)) {
        if (!NOT_SETTINGS.has(name)) found.set(name, [...(found.get(name) ?? []), `${dir}/${file}`]);
      }
    }
  }
  return found;
}

/** A value of every setting that is not its default, as the programs write them. */
function sample(): Record<string, string> {
  return Object.fromEntries(
    SETTING_NAMES.map((name) => {
      const kind = SETTINGS[name].kind;
      return [name, kind === "flag" ? "1" : kind === "list" ? `${name}:/a /b` : `value of ${name}`];
    }),
  );
}

describe("the MINC_* settings", () => {
  test("every MINC_* variable the sources name is in the table", () => {
    const missing = [...namesInSources()]
      .filter(([name]) => !isSettingName(name))
      .map(([name, files]) => `${name} (${[...new Set(files)].join(", ")})`);
    assert.deepEqual(missing, []);
  });

  test("every setting is filled by an option of minc, or says what sets it", () => {
    for (const option of MINC_OPTIONS) {
      if (option.setting)
        assert.ok(isSettingName(option.setting), `--${option.long} fills ${option.setting}, which is not in the table`);
    }
    const unfilled = SETTING_NAMES.filter((name) => !optionFor(name) && !SETTINGS[name].by);
    assert.deepEqual(unfilled, []);
  });

  test("the cgroup limits are six, each filled by its own option", () => {
    assert.deepEqual(
      LIMIT_SETTINGS.map((name) => optionFor(name)?.long),
      ["mem-limit", "mem-swap", "mem-kmem", "cpu-shares", "cpu-quota", "pid-max"],
    );
  });

  test("parsed from the variables they become, the settings are the same; and the other way round", () => {
    for (const settings of [readSettings({}), readSettings(sample())]) {
      assert.deepEqual(readSettings(settingsEnv(settings)), settings);
    }
    assert.deepEqual(settingsEnv(readSettings(sample())), sample());
  });

  test("the variables minc exports, in its order, with their values when nothing is asked for", () => {
    const env = settingsEnv(readSettings({}, BOOT_SETTINGS));
    assert.deepEqual(Object.keys(env), BOOT_SETTINGS);
    assert.deepEqual(
      Object.entries(env).filter(([, v]) => v !== ""),
      [["MINC_PIVOT", "0"]],
    );
  });

  test("flags read as the shell MINCS's tests did", () => {
    const s = readSettings({
      MINC_DIRECT: "0",
      MINC_PIVOT: "yes",
      MINC_IGNORE_STATE: "1",
      MINC_PULL_INSECURE: "0",
      MINC_PULL_UNPACK: "1",
    });
    assert.equal(s.MINC_DIRECT, true, "[ -n ] : any value is on");
    assert.equal(s.MINC_PIVOT, false, '[ = 1 ] : only "1" is on');
    assert.equal(s.MINC_IGNORE_STATE, true);
    assert.equal(s.MINC_PULL_INSECURE, false, '"0" is off');
    assert.equal(s.MINC_PULL_UNPACK, true);
    assert.deepEqual(settingsEnv({ MINC_PIVOT: false, MINC_DIRECT: false, MINC_DEBUG: true }), {
      MINC_PIVOT: "0",
      MINC_DIRECT: "",
      MINC_DEBUG: "1",
    });
  });

  test("lists split at blanks, as the shell's unquoted $X", () => {
    assert.deepEqual(readSettings({ MINC_RWBIND: " /a:/b  /c:/d\t" }).MINC_RWBIND, ["/a:/b", "/c:/d"]);
    assert.deepEqual(settingsEnv({ MINC_PORT_MAP: ["8080:80", "53:53:udp"] }), { MINC_PORT_MAP: "8080:80 53:53:udp" });
  });

  test("settings become the options that ask for them again (the guest of minc --qemu)", () => {
    const s = readSettings({ MINC_DEBUG: "1", MINC_PIVOT: "0", MINC_USERSPEC: "1000:100", MINC_DROPCAPS: "" });
    assert.deepEqual(optionsFor(s, ["MINC_DEBUG", "MINC_USE_DEV", "MINC_PIVOT", "MINC_USERSPEC", "MINC_DROPCAPS"]), [
      "--debug",
      "--user",
      "1000:100",
    ]);
  });
});
