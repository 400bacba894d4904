"""predict_fn models for the tests, registered by import path (tests.predict_fns:<name>)."""

import numpy as np
import pandas as pd


def churn_rule(df: pd.DataFrame) -> pd.DataFrame:
    """A hand-written churn score: month-to-month contracts with many tickets are risky."""
    risk = 0.15 + 0.4 * (df["contract"] == "month_to_month") + 0.08 * df["num_support_tickets"]
    score = np.clip(risk.to_numpy(dtype="float64"), 0.0, 1.0)
    return pd.DataFrame({"score": score, "segment": np.where(score >= 0.5, "high", "low")})


def undeclared_column(df: pd.DataFrame) -> pd.DataFrame:
    out = churn_rule(df)
    out["extra"] = 1
    return out


def text_score(df: pd.DataFrame) -> pd.DataFrame:
    out = churn_rule(df)
    out["score"] = out["score"].map(lambda v: f"{v:.2f}")
    return out


def one_row_short(df: pd.DataFrame) -> pd.DataFrame:
    return churn_rule(df).iloc[1:]


def null_segment(df: pd.DataFrame) -> pd.DataFrame:
    out = churn_rule(df)
    out.loc[out.index[0], "segment"] = None
    return out


def numeric_segment(df: pd.DataFrame) -> pd.DataFrame:
    out = churn_rule(df)
    out["segment"] = (out["score"] >= 0.5).astype("int64")
    return out


def boolean_score(df: pd.DataFrame) -> pd.DataFrame:
    out = churn_rule(df)
    out["score"] = out["score"] >= 0.5
    return out


def repeated_score(df: pd.DataFrame) -> pd.DataFrame:
    out = churn_rule(df)
    return pd.concat([out, out[["score"]]], axis=1)


def object_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Right values in object columns, as frames built from Python lists often have them."""
    return churn_rule(df).astype(object)
