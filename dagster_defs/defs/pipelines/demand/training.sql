-- Labelled history for the candidate model: the same features plus the units actually sold.
SELECT
    f.snapshot_date,
    f.store_id,
    f.item_id,
    f.price,
    f.promo,
    f.temperature,
    f.store_size,
    f.region,
    f.category,
    f.units_last_7d,
    f.units_last_28d,
    u.units
FROM {schema}.store_item_features AS f
JOIN {schema}.store_item_units AS u
  ON u.snapshot_date = f.snapshot_date AND u.store_id = f.store_id AND u.item_id = f.item_id
WHERE f.snapshot_date >= :window_start
  AND f.snapshot_date < :window_end
