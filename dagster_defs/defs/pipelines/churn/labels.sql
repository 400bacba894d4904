-- Churn's late labels: whether each customer scored on the day churned, once that is known.
SELECT
    customer_id,
    churned AS label,
    snapshot_date AS label_date
FROM {schema}.churn_outcomes
WHERE snapshot_date = :partition_date
