import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

/**
 * What DBeaver does first, with ClickHouse's official JDBC driver and its default URL.
 *
 * Usage: java -cp <jars>:. JdbcCheck URL USER PASSWORD
 *
 * Prints one "key<TAB>value" line per check; tests/warehouse/test_jdbc_driver.py reads them.
 * A check that throws prints "key<TAB>ERROR<TAB>code<TAB>message" and the program goes on.
 */
public final class JdbcCheck {
    private JdbcCheck() {}

    private interface Check {
        String run() throws SQLException;
    }

    private static void report(String key, Check check) {
        String out;
        try {
            out = check.run();
        } catch (SQLException e) {
            out = "ERROR\t" + e.getErrorCode() + "\t" + oneLine(e.getMessage());
        } catch (RuntimeException e) {
            out = "ERROR\t-1\t" + e.getClass().getName() + ": " + oneLine(e.getMessage());
        }
        System.out.println(key + "\t" + out);
        System.out.flush();
    }

    private static String oneLine(String text) {
        return text == null ? "" : text.replace('\n', ' ').replace('\t', ' ');
    }

    public static void main(String[] args) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(args[0], props)) {
            DatabaseMetaData meta = conn.getMetaData();
            report("product", () -> meta.getDatabaseProductName() + " "
                    + meta.getDatabaseProductVersion());
            report("schemas", () -> {
                List<String> names = new ArrayList<>();
                try (ResultSet rs = meta.getSchemas()) {
                    while (rs.next()) {
                        names.add(rs.getString("TABLE_SCHEM"));
                    }
                }
                return String.join(",", names);
            });
            report("tables", () -> {
                List<String> names = new ArrayList<>();
                try (ResultSet rs = meta.getTables(null, "tawag", "%", null)) {
                    while (rs.next()) {
                        names.add(rs.getString("TABLE_NAME"));
                    }
                }
                return String.join(",", names);
            });
            report("columns", () -> {
                List<String> names = new ArrayList<>();
                try (ResultSet rs = meta.getColumns(null, "tawag", "cdrs", "%")) {
                    while (rs.next()) {
                        names.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                    }
                }
                return String.join(",", names);
            });
            report("plain", () -> {
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery(
                             "SELECT tenant, count() AS n FROM cdrs FINAL GROUP BY tenant "
                             + "ORDER BY tenant")) {
                    List<String> rows = new ArrayList<>();
                    while (rs.next()) {
                        rows.add(rs.getString(1) + "=" + rs.getLong("n"));
                    }
                    return String.join(",", rows);
                }
            });
            report("prepared", () -> {
                try (PreparedStatement ps = conn.prepareStatement(
                        "SELECT call_id, caller FROM cdrs FINAL WHERE call_id = ? "
                        + "AND started_at >= ? ORDER BY call_id")) {
                    ps.setString(1, args.length > 3 ? args[3] : "c1");
                    ps.setTimestamp(2, java.sql.Timestamp.valueOf("2000-01-01 00:00:00"));
                    List<String> rows = new ArrayList<>();
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows.add(rs.getString("call_id") + "=" + rs.getString("caller"));
                        }
                    }
                    return String.join(",", rows);
                }
            });
            report("big", () -> {
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery(
                             "SELECT number, toString(number) AS s FROM numbers(100000)")) {
                    long rows = 0;
                    long sum = 0;
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                        if (!Long.toString(rs.getLong(1)).equals(rs.getString("s"))) {
                            return "MISMATCH at " + rows;
                        }
                    }
                    return rows + " " + sum;
                }
            });
            report("failing", () -> {
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery("SELECT no_such_column FROM cdrs")) {
                    return "NO ERROR";
                }
            });
            report("refused", () -> {
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery("SELECT * FROM file('/etc/hostname')")) {
                    return rs.next() ? "LEAKED " + rs.getString(1) : "NO ERROR";
                }
            });
        }
    }
}
