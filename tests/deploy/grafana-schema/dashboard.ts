// Grafana's own dashboard type (@grafana/schema), as a JSON file spells it.
//
// A JSON file holds the string of a string enum ("absolute"), never the enum member
// (ThresholdsMode.Absolute), so string enums are read as the union of their values. Everything
// else, excess properties included, is checked exactly as Grafana's type says.
import type { Dashboard } from '@grafana/schema';

type AsJson<T> = T extends string
  ? `${T}`
  : T extends readonly (infer U)[]
    ? AsJson<U>[]
    : T extends object
      ? { [K in keyof T]: AsJson<T[K]> }
      : T;

export type DashboardJson = AsJson<Dashboard>;
