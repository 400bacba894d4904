-- Labelled history for churn's candidate model: the day's features and whether the customer churned.
SELECT f.*, l.churned
FROM {schema}.customer_features AS f
JOIN {schema}.churn_labels AS l
  ON l.snapshot_date = f.snapshot_date AND l.customer_id = f.customer_id
WHERE f.snapshot_date >= :window_start
  AND f.snapshot_date < :window_end
